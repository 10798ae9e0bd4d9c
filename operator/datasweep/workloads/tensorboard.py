"""TensorBoard event files of a training stage (`params.tensorboard: true`), for users' existing tools.

The writer comes from `torch.utils.tensorboard` (needs the `tensorboard` package) or from `tensorboardX`;
both are optional (`pip install 'datasweep[tensorboard]'`). A stage opens its writer before training, so a
missing package fails the stage at once, never after hours of training. Event files are append-only logs
under `<artifact>/tensorboard/` (like metrics.jsonl, appended as training goes, so they can be watched).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
EVENTS_PREFIX = "events.out.tfevents."


class TensorBoardUnavailable(RuntimeError):
    """`params.tensorboard` is on but no TensorBoard writer can be imported."""


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter
    except ImportError:
        pass
    try:
        from tensorboardX import SummaryWriter as WriterX  # type: ignore[import-not-found,unused-ignore]

        return WriterX
    except ImportError:
        raise TensorBoardUnavailable(
            "params.tensorboard is true but neither the tensorboard nor the tensorboardX package is installed "
            "in the worker's environment: pip install 'datasweep[tensorboard]' (or tensorboardX) into the "
            "image, or set params.tensorboard to false (training_curves.png and the metrics files are "
            "written either way)"
        ) from None


class ScalarWriter:
    """Scalars by tag and step into `<output_dir>/tensorboard/`; flushed on close.

    `resumed_at`: the step a resumed run starts from; TensorBoard then drops the events an earlier run wrote
    after it (they are redone). A fresh start removes the events of an earlier attempt instead.
    """

    def __init__(self, output_dir: Path, resumed_at: int | None = None) -> None:
        writer_class = _summary_writer_class()
        self.log_dir = output_dir / TENSORBOARD_DIR
        if resumed_at is None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        purge_step = None if resumed_at is None else resumed_at + 1
        self._writer = writer_class(log_dir=str(self.log_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float | int | None], step: int) -> None:
        for tag, value in values.items():
            if value is not None:
                self._writer.add_scalar(tag, float(value), step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def open_writer(output_dir: Path, enabled: bool, resumed_at: int | None = None) -> ScalarWriter | None:
    """A writer when `enabled` (raises `TensorBoardUnavailable` naming the fix when it cannot be)."""
    return ScalarWriter(output_dir, resumed_at) if enabled else None


def check_available(enabled: bool) -> None:
    """Fail before any work when TensorBoard files are asked for and cannot be written."""
    if enabled:
        _summary_writer_class()


def event_files(output_dir: Path) -> list[str]:
    """The event files under `output_dir/tensorboard/`, relative to `output_dir` (for the manifest)."""
    root = output_dir / TENSORBOARD_DIR
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(output_dir)) for p in root.rglob(f"{EVENTS_PREFIX}*") if p.is_file())
