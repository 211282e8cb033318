"""The code stays clean at every commit: ruff (configured in pyproject.toml, line length 119) passes."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed; `make setup` installs it from the lock (it is in the dev extra)"
    result = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, f"ruff check found problems (fix them, or `ruff check --fix .`):\n{result.stdout}"
