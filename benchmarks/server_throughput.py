"""Throughput of `hf-sentinel serve` with dynamic batching vs. the serialised server (one request at a time).

    HF_HUB_OFFLINE=1 python benchmarks/server_throughput.py [--target default] [--defense SPEC]
        [--max-tokens 48] [--concurrency 1 4 16 64] [--requests-per-client N] [--max-batch-size 32]

Starts two real servers on 127.0.0.1 (`python -m hf_sentinel.cli serve`), one after the other: the serialised one
(`--max-batch-size 1`, the server as it was before batching) and the batching one (the server's default batch
size, or --max-batch-size). Then, for each concurrency level C, alternately on the serialised and the batching
server (never both generating at once), C client threads (httpx, one Client each) send non-streaming greedy chat
requests (temperature 0, max_tokens as given) drawn round-robin from 16 fixed everyday prompts, each client
--requests-per-client of them (default max(1, 32 // C)) one after the other. A level's throughput is the answers'
completion tokens (`usage`) over the wall time from the first request sent to the last answer received; latency
is per request, as the client sees it. Both servers are terminated at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

# Benign everyday questions of varied length (so rows of a batch are padded and end at different steps).
PROMPTS = [
    "What is a good way to keep cut flowers fresh for longer?",
    "How do I boil an egg so the yolk is still a little soft?",
    "Give me three ideas for a rainy Sunday afternoon with kids.",
    "Why is the sky blue?",
    "Can you explain what compound interest is, in simple words?",
    "What should I pack for a weekend hiking trip in the mountains in early autumn?",
    "How often should I water a cactus?",
    "Write a short, friendly message inviting my neighbours to a garden party on Saturday.",
    "What is the difference between baking soda and baking powder?",
    "Suggest a simple stretching routine for someone who sits at a desk all day.",
    "How do I remove a coffee stain from a cotton shirt?",
    "What are some tips for learning a new language as an adult?",
    "Recommend a few classic novels for a teenager who likes adventure stories.",
    "How can I make my small apartment feel more spacious?",
    "Explain how a bicycle's gears make climbing hills easier.",
    "What is a healthy breakfast I can prepare in five minutes?",
]
DEFAULT_TARGET_NOTE = "the embedded SmolLM2-135M-Instruct, its Q4_1 GGUF dequantised to float32"
STARTUP_TIMEOUT_S = 900  # the first load of the default target converts its GGUF
REQUEST_TIMEOUT_S = 1800


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `hf-sentinel serve` process on 127.0.0.1; its output goes to a log file, shown if it fails."""

    def __init__(self, name: str, target: str, defenses: list[str], max_batch_size: int | None,
                 batch_wait_ms: float | None):
        self.name, self.port, self.model = name, free_port(), target
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "hf_sentinel.cli", "serve", "--target", target, "--host", "127.0.0.1",
                   "--port", str(self.port)]
        for spec in defenses:
            command += ["--defense", spec]
        if max_batch_size is not None:
            command += ["--max-batch-size", str(max_batch_size)]
        if batch_wait_ms is not None:
            command += ["--batch-wait-ms", str(batch_wait_ms)]
        self.command = command
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"server-{name}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.name} server exited with status {self.process.returncode} before it "
                                   f"was ready:\n$ {' '.join(self.command)}\n{self.output()}")
            try:
                health = httpx.get(f"{self.url}/health", timeout=2)
                if health.status_code == 200:
                    self.model = health.json()["model"]  # the name requests give as "model"
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the {self.name} server was not ready after {timeout} s:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: uvicorn finishes what is in flight, then exits
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        os.unlink(self.log.name)


def chat(client: httpx.Client, model: str, prompt: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0}
    response = client.post("/v1/chat/completions", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
    return response.json()


def run_level(server: Server, clients: int, requests_per_client: int, max_tokens: int) -> dict:
    """`clients` threads, each with its own httpx.Client, send `requests_per_client` requests one after the other;
    client k's j-th request is prompt (k + j * clients) mod 16, so the level goes round-robin over the prompts."""
    barrier = threading.Barrier(clients + 1)
    records: list[tuple[float, int, str, str]] = []  # latency, completion tokens, prompt, answer
    errors: list[str] = []
    lock = threading.Lock()

    def client_thread(k: int) -> None:
        with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_S) as client:
            barrier.wait()
            for j in range(requests_per_client):
                prompt = PROMPTS[(k + j * clients) % len(PROMPTS)]
                start = time.perf_counter()
                try:
                    reply = chat(client, server.model, prompt, max_tokens)
                except Exception as error:  # noqa: BLE001 - reported with the results
                    with lock:
                        errors.append(f"{type(error).__name__}: {error}")
                    continue
                latency = time.perf_counter() - start
                with lock:
                    records.append((latency, reply["usage"]["completion_tokens"], prompt,
                                    reply["choices"][0]["message"]["content"]))

    threads = [threading.Thread(target=client_thread, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    latencies = sorted(r[0] for r in records)
    tokens = sum(r[1] for r in records)
    return {"server": server.name, "clients": clients, "requests": len(records), "errors": errors, "tokens": tokens,
            "wall": wall, "tokens_per_s": tokens / wall, "p50": percentile(latencies, 0.50),
            "p95": percentile(latencies, 0.95), "answers": [(r[2], r[3]) for r in records]}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (nan if none)."""
    if not values:
        return math.nan
    return values[max(math.ceil(q * len(values)) - 1, 0)]


def warm_up(server: Server, max_tokens: int) -> None:
    """One request alone, then a burst of 4 (the first generate() calls of a process are slower)."""
    for clients in (1, 4):
        errors = run_level(server, clients, 1, max_tokens)["errors"]
        if errors:
            raise RuntimeError(f"the {server.name} server failed a warm-up request: {errors[0]}")


def host_line() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    # The servers inherit this environment, so torch gives them the thread count it gives here.
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    return (f"host {platform.node()}: {os.cpu_count()} CPUs ({cpu}); torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s) per server (OMP_NUM_THREADS={omp}); "
            f"Python {platform.python_version()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="default",
                        help="default (the embedded SmolLM2-135M-Instruct), a model folder or a Hub id")
    parser.add_argument("--defense", action="append", default=[], help="passed to both servers; repeat to stack")
    parser.add_argument("--max-tokens", type=int, default=48, help="max_tokens of every request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64], help="client threads per level")
    parser.add_argument("--requests-per-client", type=int,
                        help="requests each client sends, one after the other (default: max(1, 32 // clients))")
    parser.add_argument("--max-batch-size", type=int, help="of the batching server (default: the server's, 32)")
    parser.add_argument("--batch-wait-ms", type=float, help="of the batching server (default: the server's, 10)")
    args = parser.parse_args()
    if any(c < 1 for c in args.concurrency) or (args.requests_per_client or 1) < 1 or args.max_tokens < 1:
        parser.error("--concurrency, --requests-per-client and --max-tokens must be at least 1")

    from hf_sentinel.server import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH_SIZE

    batch_size = DEFAULT_MAX_BATCH_SIZE if args.max_batch_size is None else args.max_batch_size
    batch_wait = DEFAULT_BATCH_WAIT_MS if args.batch_wait_ms is None else args.batch_wait_ms
    batching_name = f"batching({batch_size})"
    target = args.target
    if target != "default" and Path(target).exists():
        target = str(Path(target).resolve())  # the servers run in the repository root
    print(f"hf-sentinel serve throughput, {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(host_line())
    print(f"target {args.target}" + (f" ({DEFAULT_TARGET_NOTE})" if args.target == "default" else "")
          + f", defenses: {', '.join(args.defense) or 'none'}; greedy (temperature 0), max_tokens {args.max_tokens}, "
          f"{len(PROMPTS)} prompts round-robin, non-streaming")
    print(f"servers: serial (--max-batch-size 1) and {batching_name} (--max-batch-size {batch_size}, "
          f"--batch-wait-ms {batch_wait:g}); levels alternate between them, one server generating at a time",
          flush=True)

    servers: list[Server] = []
    try:
        for name, size, wait in (("serial", 1, None), (batching_name, args.max_batch_size, args.batch_wait_ms)):
            started = time.perf_counter()
            server = Server(name, target, args.defense, size, wait)
            servers.append(server)
            server.wait_healthy()  # one loads at a time
            warm_up(server, args.max_tokens)
            print(f"  {name} server ready on port {server.port} in {time.perf_counter() - started:.0f} s "
                  f"(warm-up included)", flush=True)
        results = []
        for clients in args.concurrency:
            per_client = args.requests_per_client or max(1, 32 // clients)
            for server in servers:
                result = run_level(server, clients, per_client, args.max_tokens)
                results.append(result)
                print(f"  {server.name:>14} {clients:3d} clients: {result['requests']} requests in "
                      f"{result['wall']:.1f} s", flush=True)
    finally:
        for server in servers:
            server.stop()

    print()
    print(f"{'server':<16}{'clients':>8}{'requests':>10}{'tokens':>8}{'tokens/s':>10}{'p50 s':>9}{'p95 s':>9}")
    for r in results:
        print(f"{r['server']:<16}{r['clients']:>8}{r['requests']:>10}{r['tokens']:>8}{r['tokens_per_s']:>10.1f}"
              f"{r['p50']:>9.3f}{r['p95']:>9.3f}")

    serial = {r["clients"]: r for r in results if r["server"] == "serial"}
    batching = {r["clients"]: r for r in results if r["server"] == batching_name}
    base = serial[min(serial)]  # one client, unless --concurrency leaves it out
    print()
    print(f"{batching_name} tokens/s ÷ serial at {base['clients']} client(s) (\"vs serial requests\"), and ÷ serial "
          f"at the same level:")
    print(f"{'clients':>8}{'vs serial requests':>20}{'vs serial, same level':>23}")
    def ratio(a: dict, b: dict) -> float:
        return a["tokens_per_s"] / b["tokens_per_s"] if b["tokens_per_s"] else math.nan

    for clients, result in sorted(batching.items()):
        print(f"{clients:>8}{ratio(result, base):>19.2f}×{ratio(result, serial[clients]):>22.2f}×")
    if 16 in batching and base["clients"] == 1:
        goal = ratio(batching[16], base)
        print(f"goal: 16 concurrent clients ≥ 4× the throughput of serial requests: {goal:.2f}× "
              f"({'met' if goal >= 4 else 'NOT met'})")

    # Greedy answers should not depend on the batch a request ran in: compare each with the serial server's.
    reference: dict[str, str] = {}
    for r in results:
        if r["server"] == "serial":
            for prompt, answer in r["answers"]:
                reference.setdefault(prompt, answer)
    for name, levels in (("serial", serial), (batching_name, batching)):
        pairs = [(p, a) for r in levels.values() for p, a in r["answers"] if p in reference]
        same = sum(a == reference[p] for p, a in pairs)
        print(f"greedy answers of the {name} server equal to the serial server's first answer to that prompt: "
              f"{same} of {len(pairs)}")

    errors = [(r["server"], r["clients"], e) for r in results for e in r["errors"]]
    if errors:
        print(f"\n{len(errors)} request(s) failed; the first: {errors[0][0]}, {errors[0][1]} clients: {errors[0][2]}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
