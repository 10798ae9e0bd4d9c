"""bench/bench_gpu.py --dry: the GPU check runs on the CPU with tiny configs of the same architectures and prints
each kind's step ratio and plan's memory estimate (the targets themselves are for one GPU, not checked here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_bench_gpu_dry_runs_every_kind_and_prints_its_ratios() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_gpu.py"), "--dry"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("device cpu;")
    for ratio in ("fomaml step / 3 plain steps", "moe-steer step / a plain step", "qa step / a plain step"):
        found = re.search(rf"RATIO {re.escape(ratio)} = (\d+\.\d+)", out)
        assert found, out
        assert float(found.group(1)) > 0
    for kind in ("fomaml", "moe-steer", "qa"):
        estimate = re.search(rf"^{kind} memory: plan's estimate (\d+\.\d+) MiB .*; peak n/a on the CPU$", out, re.M)
        assert estimate, out
        assert float(estimate.group(1)) > 0
