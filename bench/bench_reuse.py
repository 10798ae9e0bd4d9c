"""Request-level reuse of `datasweep worker generate`, side by side in one run against the local test server.

A dataset of N rows is generated (rephrase + validation: 2N requests) on a volume whose request store already
holds S unrelated answers (default 1,000,000); then, each as a new point of its own:
  grown      the dataset grown by 10%: only the new rows' generation and validation are sent (target <= 10% + 10%)
  judge      only the validation prompt changed: zero generation requests
  deleted    the baseline Artifact deleted and produced again: zero requests
  reuse off  the baseline again with options.requestReuse: false (every request sent: the control)
The five cases run --repeat times (each round under its own cacheVersion, so its baseline pays again). For each:
requests at the server (generation / validation), wall seconds, the worker's lookups (identities computed and
looked up in the store) in seconds, as a fraction of its wall time (target < 5%) and per identity; then the
median and spread over the rounds, and PASS/FAIL of the target on the median.

Last, a P-row point (default 100,000) whose every answer is stored, against the S answers: the time to plan it
(`datasweep plan`'s estimate, cli.plan.estimate_generate, with the store), the time to start it (the worker's
lookups, and its wall time sending nothing) and the worker's peak memory (its own process); then one store
lookup of 100,000 stored unrelated identities, with its peak Python memory.

Exits nonzero only when reuse does not work (requests sent that should not be, answers not found); timings are
reported, never failed on (a shared machine's timings are noisy: see the spread).

    HF_HUB_OFFLINE=1 python bench/bench_reuse.py [--rows 1000] [--stored 1000000] [--latency 0.1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from datasweep.api.worker import WorkerSpec
from datasweep.cli.plan import estimate_generate
from datasweep.store.requests import RequestStore, StoredAnswer
from datasweep.testing.openai_server import VALIDATION_KEYWORDS, OpenAITestServer, ServerBehavior, serve_openai
from datasweep.workloads.generate.inputs import read_splits
from datasweep.workloads.generate.tasks import plan_task
from datasweep.workloads.generate.worker import (
    generation_request,
    load_params,
    request_reuse,
    run_generate,
    validation_request,
)

DATASET = "Bench"
TARGET = 0.05  # lookups under 5% of the run's wall time
# the worker in a process of its own, for its peak memory: prints its manifest's extra, wall seconds, peak KiB
WORKER = """
import json, resource, sys, time
from datasweep.api.worker import WorkerSpec
from datasweep.workloads.generate.worker import run_generate
started = time.perf_counter()
manifest = run_generate(WorkerSpec.model_validate_json(sys.argv[1]))
wall = time.perf_counter() - started
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"extra": manifest.extra, "wall": wall, "peak_kib": peak_kib}))
"""


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


def worker_spec(root: Path, name: str, source: Path, server: OpenAITestServer, **params: Any) -> WorkerSpec:
    return WorkerSpec.model_validate(
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


def sent_since(server: OpenAITestServer, start: int) -> tuple[int, int]:
    validation = sum(
        1
        for body in server.chat_log[start:]
        if all(word in str(body["messages"][-1]["content"]) for word in VALIDATION_KEYWORDS)
    )
    return len(server.chat_log) - start - validation, validation


def spread(values: list[float], digits: int = 2) -> str:
    """median (min-max) of the rounds"""
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def run_cases(
    root: Path, server: OpenAITestServer, base: Path, grown: Path, rows: int, repeat: int
) -> tuple[dict[str, list[dict[str, float]]], list[str]]:
    judge = {"prompt": "A stricter judge. KEEP or REJECT?\nOriginal: {original}\nRephrased: {rephrased}"}
    cases: list[tuple[str, str, Path, dict[str, Any]]] = [
        ("baseline", "baseline", base, {}),
        ("grown by 10%", "grown", grown, {}),
        ("validation prompt changed", "judge", base, {"validation": judge}),
        ("deleted, produced again", "baseline", base, {}),
        ("baseline, requestReuse off", "fresh", base, {"requestReuse": False}),
    ]
    grown_rows = rows // 10
    allowed = {  # the most each case may send (generation, validation)
        "baseline": (rows, rows),
        "grown by 10%": (grown_rows, grown_rows),
        "validation prompt changed": (0, rows),
        "deleted, produced again": (0, 0),
        "baseline, requestReuse off": (rows, rows),
    }
    results: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in cases}
    failures: list[str] = []
    print(
        f"{'round':<5} {'case':<27} {'gen sent':>8} {'val sent':>8} {'reused':>6} {'wall s':>7} {'lookup s':>8} "
        f"{'lookup %':>8} {'µs/id':>6}"
    )
    for round_ in range(repeat):
        salt = f"bench-round-{round_}"  # cacheVersion: this round's identities are its own
        for label, name, source, params in cases:
            name = f"{name}-{round_}"
            if label.startswith("deleted"):
                shutil.rmtree(root / "_shared" / DATASET / name)
            start = len(server.chat_log)
            spec = worker_spec(root, name, source, server, cache_version=salt, **params)
            started = time.perf_counter()
            extra = run_generate(spec).extra
            wall = time.perf_counter() - started
            generation, validation = sent_since(server, start)
            reused = int(extra["savedByReuse"]["requests"])
            lookup = float(extra["requestStore"]["lookupSeconds"])
            looked_up = generation + validation + reused if extra["requestStore"]["lookups"] else 0
            per_identity = 1e6 * lookup / looked_up if looked_up else 0.0
            results[label].append(
                {"gen": generation, "val": validation, "reused": reused, "wall": wall, "lookup": lookup,
                 "share": lookup / wall, "per_identity": per_identity}
            )  # fmt: skip
            print(
                f"{round_:<5} {label:<27} {generation:>8} {validation:>8} {reused:>6} {wall:>7.2f} {lookup:>8.3f} "
                f"{100 * lookup / wall:>7.1f}% {per_identity:>6.0f}"
            )
            most = allowed[label]
            if generation > most[0] or validation > most[1]:
                failures.append(f"round {round_}, {label}: sent {generation} + {validation}, at most {most}")
            if label.startswith("baseline") and (generation, validation) != (rows, rows):
                failures.append(f"round {round_}, {label}: sent {generation} + {validation}, expected {rows} each")
    return results, failures


def summarize(results: dict[str, list[dict[str, float]]]) -> None:
    print(f"\nmedian (min-max) over {len(next(iter(results.values())))} rounds; target: lookups < 5% of wall")
    print(
        f"{'case':<27} {'sent gen+val':>12} {'wall s':>18} {'lookup s':>21} {'lookup % of wall':>20} "
        f"{'µs per identity':>16}  target"
    )
    for label, rounds in results.items():
        sent = statistics.median(r["gen"] + r["val"] for r in rounds)
        share = statistics.median(r["share"] for r in rounds)
        lookups_on = any(r["lookup"] for r in rounds) or "off" not in label
        verdict = ("PASS" if share < TARGET else "FAIL") if lookups_on else "n/a (no lookups)"
        print(
            f"{label:<27} {sent:>12.0f} {spread([r['wall'] for r in rounds]):>18} "
            f"{spread([r['lookup'] for r in rounds], 3):>21} "
            f"{spread([100 * r['share'] for r in rounds], 1):>20} {spread([r['per_identity'] for r in rounds], 0):>16}"
            f"  {verdict}"
        )


def store_point(root: Path, server: OpenAITestServer, store: RequestStore, rows: int) -> tuple[WorkerSpec, float]:
    """A `rows`-row point whose every request (generation and validation) is stored: the identities computed
    by the worker's own code, answered as the test server would."""
    spec = worker_spec(root, "point", write_rows(root / "src" / "point", rows), server, cache_version="point")
    params = load_params(spec)
    reuse = request_reuse(spec, params)
    assert reuse is not None
    items = plan_task(read_splits(Path(spec.source_dir), spec.dataset, params.id_field), params).items
    started = time.perf_counter()
    for chunk in range(0, len(items), 50_000):
        answers = []
        for item in items[chunk : chunk + 50_000]:
            rephrased = f"Rephrased: {item.original}"
            answers.append(StoredAnswer(reuse.identity(generation_request(item, params)), rephrased, 30, 12, "stop"))
            verdict = validation_request(item, rephrased, params)
            answers.append(StoredAnswer(reuse.identity(verdict), "KEEP: same meaning", 60, 4, "stop"))
        store.put(answers)
    return spec, time.perf_counter() - started


def run_point(root: Path, server: OpenAITestServer, store: RequestStore, rows: int, failures: list[str]) -> None:
    spec, stored_seconds = store_point(root, server, store, rows)
    print(f"\n{rows:,}-row point, every answer stored ({stored_seconds:.1f} s to store), among {store.count():,}:")
    experiment = SimpleNamespace(datasets={DATASET: SimpleNamespace(directory=Path(spec.source_dir))})
    stage = SimpleNamespace(params=spec.params, dataset=DATASET, base_model=None)
    in_store = 0.0
    lookup = store.lookup

    def timed_lookup(identities: Any) -> dict[str, StoredAnswer]:
        nonlocal in_store
        started = time.perf_counter()
        try:
            return lookup(identities)
        finally:
            in_store += time.perf_counter() - started

    store.lookup = timed_lookup  # type: ignore[method-assign]
    started = time.perf_counter()
    try:
        estimate = estimate_generate(experiment, stage, store)  # type: ignore[arg-type]
    finally:
        del store.lookup
    plan_seconds = time.perf_counter() - started
    print(
        f"  time to plan (plan's estimate with the store): {plan_seconds:.2f} s, of which store lookups "
        f"{in_store:.2f} s (the rest: rendering the requests, their identities, prices) "
        f"({estimate.stored_requests:,} stored, {estimate.requests:,} to send)"
    )
    if (estimate.stored_requests, estimate.requests) != (2 * rows, 0):
        failures.append(f"plan of the {rows}-row point: {estimate.stored_requests} stored, {estimate.requests} to send")

    start = len(server.chat_log)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, spec.model_dump_json(by_alias=True)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        failures.append(f"the worker of the {rows}-row point failed: {done.stderr[-2000:]}")
        return
    result = json.loads(done.stdout.strip().splitlines()[-1])
    worker_lookup, wall = float(result["extra"]["requestStore"]["lookupSeconds"]), float(result["wall"])
    sent = len(server.chat_log) - start
    print(
        f"  time to start (the worker's lookups of {2 * rows:,} identities): {worker_lookup:.2f} s "
        f"({1e6 * worker_lookup / (2 * rows):.0f} µs per identity); worker wall {wall:.2f} s, lookups "
        f"{100 * worker_lookup / wall:.0f}% of it; {sent} requests sent; worker peak memory (RSS) "
        f"{result['peak_kib'] / 1024:.0f} MiB"
    )
    if sent or int(result["extra"]["savedByReuse"]["requests"]) != 2 * rows:
        failures.append(f"the {rows}-row point sent {sent} requests, reused {result['extra']['savedByReuse']}")


def lookup_unrelated(store: RequestStore, count: int, failures: list[str]) -> None:
    wanted = [hashlib.sha256(f"unrelated-{index}".encode()).hexdigest() for index in range(count)]
    started = time.perf_counter()
    found = store.lookup(wanted)
    seconds = time.perf_counter() - started
    tracemalloc.start()  # again for its memory: tracing slows it down several times
    store.lookup(wanted)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"store lookup of {count:,} stored unrelated identities among {store.count():,}: {seconds:.2f} s "
        f"({1e6 * seconds / count:.0f} µs each; {len(found):,} found, peak Python memory {peak / 2**20:.0f} MiB)"
    )
    if len(found) != count:
        failures.append(f"lookup of {count} stored identities found {len(found)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--stored", type=int, default=1_000_000, help="unrelated answers in the store beforehand")
    parser.add_argument("--latency", type=float, default=0.1, help="server seconds per request")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the five cases")
    parser.add_argument("--point-rows", type=int, default=100_000, help="rows of the fully stored point")
    parser.add_argument("--lookup", type=int, default=100_000, help="identities in the final store lookup")
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
        results, failures = run_cases(root, server, base, grown, args.rows, args.repeat)
        summarize(results)
        if args.point_rows:
            run_point(root, server, store, args.point_rows, failures)
        if args.lookup:
            lookup_unrelated(store, min(args.lookup, args.stored), failures)
    for failure in failures:
        print(f"FAILED: {failure}")
    if failures:
        sys.exit(1)
    print("reuse works in every case (timings are reported, not checked)")


if __name__ == "__main__":
    main()
