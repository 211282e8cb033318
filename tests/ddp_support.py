"""Data-parallel tests: run a ``tests/ddp_<method>.py`` script on two CPU processes with torchrun (gloo), check that
the ranks end with the same weights, and return what they printed and saved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def leave_together() -> None:
    """End a rank of a ``tests/ddp_<method>.py`` script once its results are saved.

    The ranks wait for each other and close the process group, then exit without interpreter finalization: in the
    clean-clone CI a rank twice aborted there ("terminate called without an active exception", torch 2.13, gloo)
    after training had finished and its weights were saved, which failed a run that had nothing wrong with it.
    """
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_on_two_processes(script_name: str, out_dir: Path) -> tuple[str, list[dict]]:
    """Each rank of the script saves ``out_dir/rank{r}.safetensors`` and prints ``world_size=2``."""
    script = Path(__file__).parent / script_name
    # Two processes on a 2-core machine: one thread each, or OpenMP oversubscribes the cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(out_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "world_size=2" in result.stdout
    ranks = [load_file(Path(out_dir) / f"rank{rank}.safetensors") for rank in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys() and ranks[0]
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    return result.stdout, ranks
