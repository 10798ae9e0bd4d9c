"""Request-level reuse of `datasweep worker generate`, side by side in one run against the local test server.

A dataset of N rows is generated (rephrase + validation: 2N requests) on a volume whose request store already
holds S unrelated answers (default 1,000,000); then, each as a new point of its own:
  grown      the dataset grown by 10%: only the new rows' generation and validation are sent (target <= 10% + 10%)
  judge      only the validation prompt changed: zero generation requests
  deleted    the baseline Artifact deleted and produced again: zero requests
  reuse off  the baseline again with options.requestReuse: false (every request sent: the control)
For each: requests at the server (generation / validation), wall seconds, the worker's store lookups in
seconds and as a fraction of its wall time (target < 5%). Last, one lookup of 100,000 stored identities (the
start of a 100,000-row point) against the S answers: seconds and peak Python memory.

    HF_HUB_OFFLINE=1 python bench/bench_reuse.py [--rows 1000] [--stored 1000000] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from datasweep.api.worker import WorkerSpec
from datasweep.store.requests import RequestStore, StoredAnswer, request_identity
from datasweep.testing.openai_server import VALIDATION_KEYWORDS, OpenAITestServer, ServerBehavior, serve_openai
from datasweep.workloads.generate.worker import run_generate

CHAT = "POST /v1/chat/completions"
DATASET = "Bench"


def write_rows(directory: Path, rows: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "bench_train.jsonl").open("w") as handle:
        for index in range(rows):
            handle.write(json.dumps({"id": index, "text": f"The sentence number {index} says something."}) + "\n")
    return directory


def fill_store(store: RequestStore, count: int, chunk: int = 200_000) -> float:
    started = time.perf_counter()
    for start in range(0, count, chunk):
        store.put(
            StoredAnswer(
                hashlib.sha256(f"unrelated-{index}".encode()).hexdigest(),
                f"an unrelated stored answer number {index}, about as long as a rephrased sentence is",
                40,
                20,
                "stop",
                "gpt-4o-2024-08-06",
            )
            for index in range(start, min(start + chunk, count))
        )
    return time.perf_counter() - started


def run_point(
    root: Path, name: str, source: Path, server: OpenAITestServer, **params: Any
) -> tuple[dict[str, Any], float]:
    spec = WorkerSpec.model_validate(
        {
            "stage": "generate",
            "artifact": f"bench-{name}",
            "fingerprint": hashlib.sha256(name.encode()).hexdigest(),
            "dataset": DATASET,
            "semanticName": name,
            "outputDir": str(root / "_shared" / DATASET / name),
            "sourceDir": str(source),
            "params": {"base_url": server.url, "backend": "openai-compatible", "concurrency": 32, **params},
        }
    )
    started = time.perf_counter()
    manifest = run_generate(spec)
    return manifest.extra, time.perf_counter() - started


def sent_since(server: OpenAITestServer, start: int) -> tuple[int, int]:
    validation = sum(
        1
        for body in server.chat_log[start:]
        if all(word in str(body["messages"][-1]["content"]) for word in VALIDATION_KEYWORDS)
    )
    return len(server.chat_log) - start - validation, validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--stored", type=int, default=1_000_000, help="unrelated answers in the store beforehand")
    parser.add_argument("--latency", type=float, default=0.1, help="server seconds per request")
    parser.add_argument("--lookup", type=int, default=100_000, help="identities in the final lookup")
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    os.environ.setdefault("DATASWEEP_TERMINATION_LOG", os.devnull)
    print(f"{args.rows} rows, rephrase + validation; server latency {args.latency * 1000:.0f} ms, concurrency 32")
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        store = RequestStore.under(root / "_shared")
        print(f"filling the request store with {args.stored:,} answers: {fill_store(store, args.stored):.1f} s")
        server = stack.enter_context(serve_openai(ServerBehavior(latency_s=args.latency)))
        base = write_rows(root / "src" / "base", args.rows)
        grown = write_rows(root / "src" / "grown", args.rows + args.rows // 10)
        judge = {"prompt": "A stricter judge. KEEP or REJECT?\nOriginal: {original}\nRephrased: {rephrased}"}
        cases: list[tuple[str, str, Path, dict[str, Any]]] = [
            ("baseline", "baseline", base, {}),
            ("grown by 10%", "grown", grown, {}),
            ("validation prompt changed", "judge", base, {"validation": judge}),
            ("deleted, produced again", "baseline", base, {}),
            ("baseline, requestReuse off", "fresh", base, {"requestReuse": False}),
        ]
        header = (
            f"{'case':<28} {'gen sent':>8} {'val sent':>8} {'reused':>7} {'wall s':>7} {'lookup s':>8} {'lookup %':>8}"
        )
        print(header)
        baseline_sent = 0
        for label, name, source, params in cases:
            if label.startswith("deleted"):
                shutil.rmtree(root / "_shared" / DATASET / name)
            start = len(server.chat_log)
            extra, wall = run_point(root, name, source, server, **params)
            generation, validation = sent_since(server, start)
            if name == "baseline" and not baseline_sent:
                baseline_sent = generation + validation
            lookup = float(extra["requestStore"]["lookupSeconds"])
            print(
                f"{label:<28} {generation:>8} {validation:>8} {extra['savedByReuse']['requests']:>7} {wall:>7.2f} "
                f"{lookup:>8.3f} {100 * lookup / wall:>7.1f}%"
            )
        print(f"(baseline sent {baseline_sent}; grown by 10% may send up to {baseline_sent // 10})")

        # the start of a 100,000-row point: its identities looked up against the whole store
        wanted = [hashlib.sha256(f"unrelated-{index}".encode()).hexdigest() for index in range(args.lookup)]
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Rephrase: x"}], "temperature": 0.7}
        started = time.perf_counter()
        identities = [request_identity("openai", {**body, "seed": index}) for index in range(args.lookup)]
        identity_seconds = time.perf_counter() - started
        started = time.perf_counter()
        found = store.lookup(wanted)
        lookup_seconds = time.perf_counter() - started
        tracemalloc.start()  # again for its memory: tracing slows it down several times
        store.lookup(wanted)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(
            f"lookup of {args.lookup:,} stored identities among {store.count():,}: {lookup_seconds:.2f} s "
            f"({len(found):,} found, peak Python memory {peak / 2**20:.0f} MiB); "
            f"computing {len(identities):,} identities: {identity_seconds:.2f} s"
        )


if __name__ == "__main__":
    main()
