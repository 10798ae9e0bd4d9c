"""Read what a training stage wrote for TensorBoard and for people: event scalars and the manifest's roles."""

from __future__ import annotations

from pathlib import Path

from datasweep.store.manifest import Manifest
from datasweep.workloads.curves import CURVES_FILE
from datasweep.workloads.tensorboard import TENSORBOARD_DIR


def read_scalars(output_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series under output_dir/tensorboard/, as TensorBoard itself loads them (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(output_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def assert_curves_and_events_listed(manifest: Manifest, output_dir: Path) -> list[str]:
    """training_curves.png is a PNG listed as a report; the event files are listed as metrics. Returns them."""
    assert (output_dir / CURVES_FILE).read_bytes()[:4] == b"\x89PNG"
    assert CURVES_FILE in manifest.outputs.reports
    events = [path for path in manifest.outputs.metrics if path.startswith(f"{TENSORBOARD_DIR}/")]
    assert events, manifest.outputs.metrics
    listed = {entry.path for entry in manifest.files}
    assert set(events) <= listed
    return events
