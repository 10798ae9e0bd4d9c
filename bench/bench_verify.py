"""The check before reuse (issue 25 item 4) at N points, side by side with reuse as it was (is_complete only).

A local store holds N Ready generate Artifacts (the Copa layout of testing/artifacts.py: three splits, a rejected
file, reports, the manifest), made for an N-point experiment (a temperature x max_tokens grid). Timed, each the
best of --repeat runs:
  plan          `datasweep plan` of that experiment (every point a hit), with and without the check
  reuse scan    the reuse decision alone for the N directories: is_complete, then is_complete + the size check
  deep          `datasweep verify --deep`'s hashing of the same directories (not on the reuse path: for scale)
The operator's check before reuse (controller/artifact.py replace_if_damaged) is the same size check per Ready
Artifact it reuses, so the per-Artifact figure is its cost too: one read of manifest.json and a stat per file.

    python bench/bench_verify.py [--points 1000] [--rows 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

import datasweep.cli.plan as plan_cli
from datasweep.cli.main import cli
from datasweep.local.experiment_file import load_experiment
from datasweep.store.layout import claim_generate_dir, find_generate_dir, is_complete
from datasweep.store.manifest import FINGERPRINT_NAME
from datasweep.store.verify import Damage, check_artifact
from datasweep.testing.artifacts import finalize_as_generate


def write_source(directory: Path, rows: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        with (directory / f"copa_{split}.jsonl").open("w") as handle:
            for index in range(rows):
                handle.write(json.dumps({"id": f"{split}-{index}", "text": f"The man broke his toe ({index})."}) + "\n")


def write_experiment(workspace: Path, points: int) -> Path:
    tokens = [64 + 8 * i for i in range(max(1, points // 10))]
    temperatures = [round(0.05 * i, 2) for i in range(points // len(tokens))]
    spec: dict[str, Any] = {
        "batch": "batch_20250101_bench",
        "maxPoints": points,
        "datasets": [{"name": "Copa", "source": {"path": "raw/copa"}}],
        "generation": {"model": "gpt-4o", "backend": "openai", "temperature": temperatures, "maxTokens": tokens},
        "validation": {"model": "gpt-4o", "temperature": 0.0},
    }
    obj = {"apiVersion": "datasweep.io/v1alpha1", "kind": "Experiment", "metadata": {"name": "bench"}, "spec": spec}
    path = workspace / "bench.yaml"
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def produce(root: Path, experiment: Path, rows: int) -> list[Path]:
    """Every point's generate directory, as the worker leaves it (files, then the manifest last)."""
    plan = load_experiment(experiment, None, {}).plan()
    directories = []
    for point in plan.points:
        gen = point.generate
        directory = root / claim_generate_dir(root, gen.dataset, gen.semantic_name, gen.fingerprint)
        (directory / "Copa" / "rejected").mkdir(parents=True, exist_ok=True)
        for split in ("train", "validation", "test"):
            lines = "".join(json.dumps({"id": i, "text": f"rephrased {i}"}) + "\n" for i in range(rows))
            (directory / "Copa" / f"copa_{split}.jsonl").write_text(lines)
        (directory / "Copa" / "rejected" / "copa_train.jsonl").write_text('{"id": 0}\n')
        (directory / "report.json").write_text(json.dumps({"kept": rows}))
        finalize_as_generate(directory, "Copa")
        (directory / FINGERPRINT_NAME).write_text(gen.fingerprint + "\n")
        directories.append(directory)
    return directories


def best_of(repeat: int, action: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def best_of_pair(repeat: int, first: Callable[[], Any], second: Callable[[], Any]) -> tuple[float, float]:
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for action, found in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            action()
            found.append(time.perf_counter() - started)
    return min(times[0]), min(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=200, help="records per split file")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        write_source(workspace / "raw" / "copa", 20)
        experiment = write_experiment(workspace, args.points)
        root = workspace / "store"
        directories = produce(root, experiment, args.rows)
        points = len(directories)
        files = sum(1 for d in directories for p in d.rglob("*") if p.is_file())

        def plan() -> None:
            result = CliRunner().invoke(cli, ["plan", str(experiment), "--root", str(root), "-o", "json"])
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["totals"]["pointsReused"] == points, "every point must be a hit"

        original = plan_cli.check_artifact

        def plan_without_check() -> None:
            plan_cli.check_artifact = lambda directory, **_: Damage(())  # type: ignore[assignment]
            try:
                plan()
            finally:
                plan_cli.check_artifact = original

        # alternated, best of each: a machine whose load changes during the run skews both alike
        without_check, with_check = best_of_pair(args.repeat, plan_without_check, plan)

        gens = load_experiment(experiment, None, {}).plan().points

        def scan(check: bool) -> None:
            for point in gens:
                g = point.generate
                rel = find_generate_dir(root, g.dataset, g.semantic_name, g.fingerprint)
                assert rel is not None
                assert is_complete(root / rel)
                assert not (check and check_artifact(root / rel))

        scan_before, scan_after = best_of_pair(args.repeat, lambda: scan(False), lambda: scan(True))
        deep = best_of(1, lambda: [check_artifact(d, deep=True) for d in directories])

    print(f"{points} Ready generate Artifacts, {files} files ({files / points:.1f} per Artifact, manifest included)")
    print(f"{'':22}{'without':>12}{'with check':>12}{'ratio':>8}{'check/Artifact':>16}")
    per = (with_check - without_check) / points * 1e6
    print(
        f"{'plan (all hits)':22}{without_check * 1e3:>10.0f}ms{with_check * 1e3:>10.0f}ms"
        f"{with_check / without_check:>8.2f}{per:>13.0f} µs"
    )
    per = (scan_after - scan_before) / points * 1e6
    print(
        f"{'reuse scan':22}{scan_before * 1e3:>10.0f}ms{scan_after * 1e3:>10.0f}ms"
        f"{scan_after / scan_before:>8.2f}{per:>13.0f} µs"
    )
    print(f"{'verify --deep':22}{'':>12}{deep * 1e3:>10.0f}ms{'':>8}{deep / points * 1e6:>13.0f} µs")


if __name__ == "__main__":
    main()
