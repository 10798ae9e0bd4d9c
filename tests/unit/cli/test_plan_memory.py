"""plan's MEMORY column on a real model's config.json alone (tests/fixtures/memory-plan: OLMoE-1B-7B's config, no
weights): a moe-steer stage with top_n 10 fits one 80 GB GPU; one that cannot fit is refused by plan and run
before anything is created, naming the changes that make it fit."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Invoke
from datasweep.core.memory import GIB

FIXTURES = Path(__file__).parents[2] / "fixtures" / "memory-plan"


def test_plan_shows_the_estimate_per_gpu_of_an_olmoe_moe_steer_stage(tmp_path: Path, invoke: Invoke) -> None:
    experiment = FIXTURES / "olmoe-steer.yaml"
    text = invoke("plan", experiment, "--data-dir", FIXTURES, "--root", tmp_path / "root").stdout
    header = next(line for line in text.splitlines() if "MEMORY" in line and "STAGE" in line)
    steer = next(line for line in text.splitlines() if " steer " in line)
    assert steer[header.index("MEMORY") :].strip() == "33.6/80 GiB"
    assert "memory of one GPU: NVIDIA-H100-80GB-HBM3 (assumed" in text
    data = json.loads(invoke("plan", experiment, "--data-dir", FIXTURES, "--root", tmp_path, "-o", "json").stdout)
    (memory,) = [s["memory"] for s in data["stages"] if s["kind"] == "moe-steer"]
    assert memory["trainable"] == 10 * 3 * 2048 * 1024  # the 10 selected experts only
    assert memory["bytesPerGpu"] < 40 * 10**9
    assert memory["fits"] is True
    assert memory["gpuMemoryBytes"] == 81559 * 1024**2
    assert not (tmp_path / "root").exists()


def test_a_stage_that_cannot_fit_is_refused_before_anything_is_created(tmp_path: Path, invoke: Invoke) -> None:
    experiment = FIXTURES / "olmoe-steer-too-big.yaml"
    root = tmp_path / "root"
    for command in ("plan", "run"):
        result = invoke(command, experiment, "--data-dir", FIXTURES, "--root", root, expect=2)
        message = " ".join(result.output.split())
        assert "a training stage cannot fit its GPU (nothing was run)" in message
        assert "spec.training[0] steer (moe-steer) needs about 174.0 GiB per GPU" in message
        assert "NVIDIA-H100-80GB-HBM3 has 79.6 GiB" in message
        assert 'params.torch_dtype: "bfloat16" -> 93.2 GiB (still too big)' in message
        assert 'together (params.torch_dtype "bfloat16", params.batch_size 16) -> 53.4 GiB (fits)' in message
        assert not root.exists() or not any(root.iterdir())


def test_resources_gpu_memory_names_the_gpu_compared_with(tmp_path: Path, invoke: Invoke) -> None:
    spec = (
        (FIXTURES / "olmoe-steer.yaml").read_text(encoding="utf-8").replace("{gpus: 1}", "{gpus: 1, gpuMemory: 24Gi}")
    )
    experiment = tmp_path / "small-gpu.yaml"
    experiment.write_text(spec, encoding="utf-8")
    result = invoke("plan", experiment, "--data-dir", FIXTURES, "--root", tmp_path / "root", expect=2)
    assert f"24Gi has {24 * GIB / GIB:.1f} GiB (resources.gpuMemory" in " ".join(result.output.split())
