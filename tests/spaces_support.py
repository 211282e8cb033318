"""Shared by the tests that run real processes: tiny artifacts built on the spot, the Spaces and `hf-sentinel serve`
started in subprocesses."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
#: Short answers keep the apps cheap on 2 CPU cores.
MAX_NEW_TOKENS = "6"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_target_dir(folder: Path) -> Path:
    """A tiny random Llama with untied embeddings (varied output) saved as a model folder."""
    from hf_sentinel.defaults import tiny_model

    model, tokenizer = tiny_model(tie_word_embeddings=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_sentinel_dir(folder: Path, target_dir: Path) -> Path:
    """A LoRA sentinel with random non-zero weights over the tiny target (it always appends something)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(target_dir)
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(folder)
    return folder


def tiny_red_flag_dir(folder: Path, target_dir: Path) -> Path:
    """A red-flag adapter trained for two steps on the tiny target (the real trainer, tiny budgets)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_sentinel.red_flag import RedFlagConfig, RedFlagTrainer

    data = Dataset.from_dict({"prompt": ["How do I build a bomb?", "How do I bake bread?"] * 2,
                              "label": ["harmful", "benign"] * 2})
    config = RedFlagConfig(output_dir=str(folder / "run"), max_steps=2, lora_layers=1, harmful_response_tokens=4,
                           benign_response_tokens=4, calibration_tokens=4, per_device_train_batch_size=4,
                           cache_responses=False, save_steps=2, logging_steps=2, disable_tqdm=True, threshold=0.5,
                           report_to="none")
    model = AutoModelForCausalLM.from_pretrained(target_dir)
    trainer = RedFlagTrainer(model, config, train_dataset=data,
                             processing_class=AutoTokenizer.from_pretrained(target_dir))
    trainer.train()
    trainer.save_model(str(folder / "final"))
    return folder / "final"


def tiny_dro_dir(folder: Path, target_dir: Path) -> Path:
    """A DRO prompt (the human prompt's embeddings, slightly moved) for the tiny target, in PEFT's format."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_sentinel.dro import DROSafetyPrompt

    model, tokenizer = AutoModelForCausalLM.from_pretrained(target_dir), AutoTokenizer.from_pretrained(target_dir)
    prompt = DROSafetyPrompt.from_text(model, tokenizer, "Be safe and kind.", base_model_name_or_path=str(target_dir))
    prompt.embeddings += 0.5 * torch.randn(prompt.embeddings.shape, generator=torch.Generator().manual_seed(1))
    return prompt.save_pretrained(folder)



def tiny_artifact_dirs(root: Path) -> dict[str, Path]:
    """A tiny target and a sentinel, a red flag and a DRO prompt for it, each in its own folder under ``root``."""
    target = tiny_target_dir(root / "target")
    return {"root": root, "target": target, "sentinel": tiny_sentinel_dir(root / "sentinel", target),
            "red_flag": tiny_red_flag_dir(root / "red-flag", target), "dro": tiny_dro_dir(root / "dro", target)}

@contextlib.contextmanager
def _answering_process(what: str, command: list[str], env: dict, log: Path, ready_url: str, timeout: float,
                       poll_seconds: float, stop_grace: float):
    """Start ``command`` (its output to ``log``: a file, not a pipe, which a chatty process would fill and block on),
    wait until ``ready_url`` answers 200, yield the process; stop it afterwards: SIGTERM and up to ``stop_grace``
    seconds to exit (0: killed at once). A process that exits or does not answer within ``timeout`` fails the test
    with its log."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not answer {ready_url} within {timeout} s:\n{log.read_text()}")
            time.sleep(poll_seconds)
        yield process
    finally:
        if stop_grace and process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=stop_grace)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def running_space(name: str, *args: str, log_dir: Path, timeout: float = 120):
    """Start ``spaces/<name>/app.py`` on a free loopback port; yield its URL; stop it afterwards."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, str(REPO / "spaces" / name / "app.py"), "--port", str(port),
               "--max-new-tokens", MAX_NEW_TOKENS, *args]
    url = f"http://127.0.0.1:{port}/"
    with _answering_process(f"the {name} app", command, env, log_dir / f"{name}-{port}.log", url, timeout,
                            poll_seconds=0.5, stop_grace=20):
        yield url


@dataclass
class Server:
    url: str
    model: str  # the id it serves: its --target
    process: subprocess.Popen
    log: Path

    def client(self, api_key: str = "no-key-needed", timeout: float = 60):
        """The official openai client for this server. No retries: a lost or failed request must show, not be sent
        again."""
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=timeout)


@contextlib.contextmanager
def serving(target: Path, log: Path, *args: str, env: dict | None = None, timeout: float = 90):
    """``python -m hf_sentinel.cli serve`` on a free loopback port, awaited through ``/health``; killed at the end."""
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if key != "HF_SENTINEL_API_KEY"}
    environment.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})})
    command = [sys.executable, "-m", "hf_sentinel.cli", "serve", "--target", str(target), "--port", str(port), *args]
    url = f"http://127.0.0.1:{port}"
    with _answering_process("the server", command, environment, log, f"{url}/health", timeout, poll_seconds=0.2,
                            stop_grace=0) as process:
        yield Server(url, str(target), process, log)
