"""Process-group setup from torchrun's environment; one process without it (the CPU path is the same code)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "DATASWEEP_DEVICE"  # force a device (e.g. "cpu") regardless of what is available


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    fsdp: bool = False
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def all_reduce_sum(self, tensors: list[torch.Tensor]) -> None:
        if not self.distributed:
            return
        import torch.distributed as dist

        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_object(self, obj: Any) -> Any:
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def shutdown(self) -> None:
        if self.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized_here = False


def init_distributed(use_fsdp: bool = False) -> DistContext:
    """Join torchrun's process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPU)."""
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    forced = os.environ.get(DEVICE_ENV)
    use_cuda = torch.cuda.is_available() and forced in (None, "", "cuda")
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device(forced or "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    initialized_here = False
    if world_size > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
            initialized_here = True
    return DistContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=device,
        fsdp=use_fsdp and world_size > 1,
        initialized_here=initialized_here,
    )
