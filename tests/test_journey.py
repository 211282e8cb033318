"""The "From zero" walk-through (README.md) runs verbatim: every command of its ``bash`` blocks, in order, in a
fresh working folder, on the embedded target, with the tiny budgets written in the commands themselves.

Only the environment is the test's: the Hub is a local stand-in (tests/fake_hub.py) reached through HF_ENDPOINT,
and a command that starts a Space runs until the Space answers, then is stopped.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fake_hub import FakeHub
from spaces_support import REPO, free_port

README = REPO / "README.md"
pytestmark = pytest.mark.integration


def journey_commands() -> list[str]:
    """The commands of the ``bash`` blocks, one per line (the ``shell`` install block is the set-up itself)."""
    blocks = re.findall(r"```bash\n(.*?)```", journey_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def journey_text() -> str:
    """The README's "From zero" section: from its heading to the next second-level heading."""
    text = README.read_text()
    start = text.index("\n## From zero")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_the_journey_names_every_step():
    text = journey_text()
    for step in ("Install", "See the defenses", "Train each defense", "Evaluate", "Push to the Hub", "Launch a Space"):
        assert step in text
    commands = journey_commands()
    for method in ("sentinel", "red-flag", "dro", "mart"):
        assert any(c.startswith(f"hf-sentinel train {method} ") for c in commands), method
    # What the install block says `make setup` runs: the package from the lock.
    assert 'pip install --constraint constraints.txt -e ".[dev]"' in text
    makefile = (REPO / "Makefile").read_text()
    assert "LOCK := constraints.txt" in makefile and "$(call install,$(VENV),--constraint $(LOCK)" in makefile
    assert '-e ".[dev]"' in makefile


def test_from_zero_journey_runs_verbatim(tmp_path):
    (tmp_path / "spaces").symlink_to(REPO / "spaces")  # the journey runs from a checkout's root
    bin_dir = Path(sys.executable).parent
    with FakeHub() as hub:
        # The commands run one after another while this process waits: both cores are theirs.
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "2",
               "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_fake_token",
               "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}
        for command in journey_commands():
            if command.startswith("python spaces/"):
                _check_space_starts(command, tmp_path, env)
                continue
            started = time.monotonic()
            done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, f"`{command}` failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            print(f"{time.monotonic() - started:6.1f} s  {command[:100]}")
        pushed = hub.repos["your-name/red-flag-smollm2"]["files"]
        assert {"README.md", "adapter_model.safetensors", "red_flag_config.json"} <= set(pushed)
        assert 'red_flag="your-name/red-flag-smollm2"' in pushed["README.md"].decode()
    for artifact in ("sentinel", "red-flag", "dro", "mart/round-1/target"):
        assert (tmp_path / "outputs/journey" / artifact / "README.md").is_file(), artifact
    assert (tmp_path / "outputs/journey/compare.png").is_file()


def _check_space_starts(command: str, cwd: Path, env: dict) -> None:
    """Start the Space command as written (on a free port instead of the documented one), wait until it serves its
    page, stop it."""
    argv = shlex.split(command)
    port = str(free_port())
    argv = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    argv[argv.index("--port") + 1] = port
    process = subprocess.Popen(argv, cwd=cwd, env={**env, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        raise AssertionError(f"`{command}` did not serve its page:\n{process.stdout.read() if process.poll() else ''}")
    finally:
        process.terminate()
        process.wait(timeout=20)
