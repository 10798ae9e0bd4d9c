"""Two CPU ranks (gloo, as torchrun would set them up) give the same meta-steps as one process.

Both parallel paths are checked: replicas (tasks split across ranks, meta-gradient all-reduced) and FSDP2
(`use_fsdp`: parameters sharded, each batch's rows split across ranks); FSDP2's fully_shard runs on CPU with
gloo in the installed torch, so the sharded path is tested for real, not only on GPUs.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

STEPS = 2
# inner_batch_size and query_batch_size are multiples of the 2 ranks (use_fsdp requires it)
SETTINGS: dict[str, Any] = {"dtype": "float64", "meta_batch_size": 3, "total_steps": STEPS, "inner_batch_size": 2}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rank_main(rank: int, world: int, port: int, model_dir: str, out: str, use_fsdp: bool) -> None:
    import torch

    os.environ.update(
        {
            "WORLD_SIZE": str(world),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "DATASWEEP_DEVICE": "cpu",
        }
    )
    torch.set_num_threads(1)
    import importlib

    make_trainer = importlib.import_module(f"{__package__}.test_training").make_trainer
    trainer = make_trainer(Path(model_dir), use_fsdp=use_fsdp, **SETTINGS)
    assert trainer.dist.fsdp is use_fsdp
    metrics = [trainer.train_step() for _ in range(STEPS)]
    state = trainer.full_model_state()  # collective under FSDP: every rank takes part
    if rank == 0:
        torch.save({"state": state, "metrics": metrics}, out)
    trainer.dist.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("use_fsdp", [False, True], ids=["replicas", "fsdp"])
def test_two_gloo_ranks_match_one_process(tiny_model: Path, tmp_path: Path, use_fsdp: bool) -> None:
    import torch
    import torch.multiprocessing as mp

    from .test_training import make_trainer

    out = tmp_path / "result.pt"
    mp.spawn(_rank_main, args=(2, _free_port(), str(tiny_model), str(out), use_fsdp), nprocs=2, join=True)
    single: Any = make_trainer(tiny_model, **SETTINGS)
    single_metrics = [single.train_step() for _ in range(STEPS)]
    distributed = torch.load(out)
    expected = single.model.state_dict()
    assert set(distributed["state"]) == set(expected)
    worst = max(float((expected[key] - value).abs().max()) for key, value in distributed["state"].items())
    assert worst < 1e-10
    # the parameters moved (a run that trained nothing would match too)
    assert single_metrics[1]["query_loss"] < single_metrics[0]["query_loss"]
    for got, want in zip(distributed["metrics"], single_metrics, strict=True):
        assert got["query_loss"] == pytest.approx(want["query_loss"], rel=1e-10)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-10)
