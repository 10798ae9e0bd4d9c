"""From a stage plan to the WorkerSpec its worker runs: one function for the operator and the local runner."""

from __future__ import annotations

from pathlib import PurePosixPath

from datasweep.api.worker import WorkerSpec
from datasweep.core.plan import StagePlan


def worker_spec_for(
    stage: StagePlan,
    *,
    data_root: str,
    relpath: str,
    input_relpaths: dict[str, str] | None = None,
    source_dir: str | None = None,
    base_model: str | None = None,
    batch: str,
    experiment: str,
) -> WorkerSpec:
    """`data_root` is where the data volume is mounted for the worker (`/data` in Jobs, `--root` locally).

    `batch` and `experiment` are required: the worker records them in experiment_metadata.json (the
    artifact's first batch and the experiment that created it, seed 000)."""
    root = PurePosixPath(data_root)
    return WorkerSpec(
        stage=stage.stage,  # type: ignore[arg-type]
        artifact=stage.artifact,
        fingerprint=stage.fingerprint,
        dataset=stage.dataset,
        semantic_name=stage.semantic_name,
        output_dir=str(root / relpath),
        source_dir=source_dir,
        inputs={role: str(root / rel) for role, rel in (input_relpaths or {}).items()},
        base_model=base_model,
        params=stage.params,
        batch=batch,
        experiment=experiment,
    )
