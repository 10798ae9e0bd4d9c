"""Two CPU ranks (gloo, as torchrun would set them up) give the same meta-step as one process."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rank_main(rank: int, world: int, port: int, model_dir: str, out: str) -> None:
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
    trainer = make_trainer(Path(model_dir), dtype="float64", meta_batch_size=3, total_steps=2)
    for _ in range(2):
        trainer.train_step()
    if rank == 0:
        torch.save([p.detach() for p in trainer.model.parameters()], out)
    trainer.dist.shutdown()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    import torch.multiprocessing as mp

    from .test_training import make_trainer

    out = tmp_path / "params.pt"
    mp.spawn(_rank_main, args=(2, _free_port(), str(tiny_model), str(out)), nprocs=2, join=True)
    single: Any = make_trainer(tiny_model, dtype="float64", meta_batch_size=3, total_steps=2)
    for _ in range(2):
        single.train_step()
    distributed = torch.load(out)
    worst = max(float((a - b).abs().max()) for a, b in zip(single.model.parameters(), distributed, strict=True))
    assert worst < 1e-10
