"""Sync chat-completions throughput of `datasweep worker generate` against the local test server.

The server answers every request after a fixed latency L; with C requests in flight the best possible
throughput is C / L requests per second. For each C this prints the measured ratio to that bound, for the
whole worker (plan, requests, durable journal, compile, manifest) on N requests. Target: ratio >= 0.90.

    HF_HUB_OFFLINE=1 python bench/bench_generate.py [--latency 0.2] [--concurrency 16 32] [--rounds 20]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from datasweep.api.worker import WorkerSpec
from datasweep.testing.openai_server import ServerBehavior, serve_openai
from datasweep.workloads.generate.worker import run_generate


def bench_once(root: Path, url: str, concurrency: int, requests: int) -> tuple[float, float]:
    source = root / f"src-{concurrency}"
    source.mkdir(parents=True)
    with (source / "bench_train.jsonl").open("w") as handle:
        for index in range(requests):
            handle.write(json.dumps({"id": index, "text": f"sentence number {index}"}) + "\n")
    spec = WorkerSpec.model_validate(
        {
            "stage": "generate",
            "artifact": f"bench-{concurrency}",
            "fingerprint": f"{concurrency:064x}",
            "dataset": "Bench",
            "semanticName": "bench",
            "outputDir": str(root / f"out-{concurrency}"),
            "sourceDir": str(source),
            "params": {"base_url": url, "validation": None, "concurrency": concurrency, "max_retries": 0},
        }
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    manifest = run_generate(spec)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert manifest.usage.requests == requests
    return elapsed, cpu


@contextlib.contextmanager
def server_process(latency: float) -> Iterator[str]:
    """The test server in its own process, so that its CPU time does not share the worker's GIL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "datasweep.testing.openai_server", "--port", str(port), "--latency", str(latency)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 32])
    parser.add_argument(
        "--rounds",
        type=int,
        nargs="+",
        default=[12, 50],
        help="run lengths: requests = rounds x concurrency; the short run shows the worker's fixed start-up "
        "cost (~0.2 s), the long one its sustained throughput, which the C/latency bound is about",
    )
    parser.add_argument(
        "--in-process", action="store_true", help="run the server in a thread of this process (shares the GIL)"
    )
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    os.environ.setdefault("DATASWEEP_TERMINATION_LOG", os.devnull)
    print(f"latency {args.latency * 1000:.0f} ms per request (server side)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'C':>4} {'requests':>8} {'seconds':>8} {'req/s':>8} {'bound':>8} {'ratio':>6} {'worker CPU ms/req':>18}")
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        if args.in_process:
            url = stack.enter_context(serve_openai(ServerBehavior(latency_s=args.latency))).url
        else:
            url = stack.enter_context(server_process(args.latency))
        for concurrency, rounds in itertools.product(args.concurrency, args.rounds):
            requests = rounds * concurrency
            elapsed, cpu = bench_once(Path(tmp) / f"c{concurrency}-r{rounds}", url, concurrency, requests)
            rate = requests / elapsed
            bound = concurrency / args.latency
            print(
                f"{concurrency:>4} {requests:>8} {elapsed:>8.2f} {rate:>8.1f} {bound:>8.1f} {rate / bound:>6.3f} "
                f"{cpu / requests * 1000:>18.2f}"
            )


if __name__ == "__main__":
    main()
