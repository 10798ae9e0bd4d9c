"""Training on existing data: the seed 002 / 003 / 004 examples (`prepared: true`, no generation) run with
`datasweep run` on their own sample data, with tiny models and few steps; a rerun reuses everything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from datasweep.cli.main import cli
from datasweep.store.inputs import read_input
from datasweep.store.manifest import read_manifest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "prepared"

# The examples' parameters are for real models; these only make the tiny run short.
FAST: dict[str, dict[str, Any]] = {
    "qa": {
        "num_train_epochs": 1,
        "grad_accum_steps": 1,
        "num_workers": 0,
        "max_length": 64,
        "doc_stride": 16,
        "plot_update_every": 100,
        "early_stopping_patience": 0,
    },
    "fomaml": {
        "total_steps": 1,
        "save_freq": 1,
        "test_freq": 0,
        "meta_batch_size": 2,
        "inner_batch_size": 2,
        "query_batch_size": 2,
        "num_inner_steps": 1,
        "k_shots": [1],
        "eval_max_samples": 2,
        "max_length": 48,
    },
    "moe-steer": {"batch_size": 4, "max_batches": 2, "num_epochs": 1, "top_n": 2, "torch_dtype": "float32"},
}


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize(
    ("example", "kind", "dataset"),
    [
        ("qa-aliastitle.yaml", "qa", "AliasTitle"),
        ("fomaml-tasks.yaml", "fomaml", "Tasks"),
        ("fomaml-csv.yaml", "fomaml", "Science"),
        ("moe-steer-safety.yaml", "moe-steer", "Safety"),
    ],
)
def test_example_trains_on_its_dataset_without_generation(
    tmp_path: Path, example: str, kind: str, dataset: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue({"qa": "tiny_bert", "fomaml": "tiny_llama", "moe-steer": "tiny_olmoe"}[kind])
    obj = yaml.safe_load((EXAMPLES / example).read_text(encoding="utf-8"))
    stage = obj["spec"]["training"][0]
    assert stage["kind"] == kind
    assert "generation" not in obj["spec"]
    stage["params"].update(FAST[kind])
    (tmp_path / "data").symlink_to(EXAMPLES / "data")
    (tmp_path / stage["baseModel"]["path"]).parent.mkdir(parents=True)
    (tmp_path / stage["baseModel"]["path"]).symlink_to(model)
    experiment = tmp_path / example
    experiment.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
    root = tmp_path / "root"

    plan = _run("plan", experiment, "--root", root, "--data-dir", tmp_path)
    assert plan.exit_code == 0, plan.output
    assert "copy, free" in plan.output

    first = _run("run", experiment, "--root", root, "--data-dir", tmp_path)
    assert first.exit_code == 0, first.output
    assert "1 points: 0 reused, 1 created (2 stages: 0 reused, 2 created)" in first.output
    snapshot = root / "_shared" / dataset / "prepared"
    manifest = read_manifest(snapshot)
    assert manifest is not None
    assert manifest.stage == "dataset"
    source = EXAMPLES / "data" / dataset.lower()
    assert sorted(manifest.outputs.data) == sorted(p.stem.rsplit("_", 1)[1] for p in source.glob(f"{source.name}_*"))
    assert [p.read_bytes() for p in read_input(snapshot).files()] == [
        (source / p.name).read_bytes() for p in read_input(snapshot).files()
    ]
    (trained,) = (snapshot / "train").iterdir()
    assert trained.name.startswith(f"{kind}-")
    assert read_manifest(trained) is not None

    # the batch tools see the point like any generated one
    rows = json.loads(_run("paths", "--root", root, "--dataset", dataset, "--format", "json").output)
    assert [(r["semanticName"], r["ready"]) for r in rows] == [("prepared", True)]
    assert Path(rows[0]["data"]["path"]).resolve() == (snapshot / dataset).resolve()
    (batch,) = json.loads(_run("batches", "--root", root, "-o", "json").output)
    assert batch["points"] == 1

    second = _run("run", experiment, "--root", root, "--data-dir", tmp_path)
    assert second.exit_code == 0, second.output
    assert "1 points: 1 reused, 0 created (2 stages: 2 reused, 0 created)" in second.output


def test_seed_003_per_task_files_are_snapshotted_hashed_and_trained_on(tmp_path: Path, tiny_llama: Path) -> None:
    obj = yaml.safe_load((EXAMPLES / "fomaml-seed-tasks.yaml").read_text(encoding="utf-8"))
    stage = obj["spec"]["training"][0]
    assert [task["name"] for task in stage["params"]["tasks"]] == ["biology", "math"]
    stage["params"].update(FAST["fomaml"], max_length=96)
    stage["params"]["tasks"][0].update(support_max_samples=2, query_max_samples=3)
    source = tmp_path / "data" / "seedtasks"
    shutil.copytree(EXAMPLES / "data" / "seedtasks", source)
    (tmp_path / stage["baseModel"]["path"]).parent.mkdir(parents=True)
    (tmp_path / stage["baseModel"]["path"]).symlink_to(tiny_llama)
    experiment = tmp_path / "seed-tasks.yaml"
    experiment.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
    root = tmp_path / "root"

    first = _run("run", experiment, "--root", root, "--data-dir", tmp_path)
    assert first.exit_code == 0, first.output
    assert "1 points: 0 reused, 1 created (2 stages: 0 reused, 2 created)" in first.output
    snapshot = root / "_shared" / "SeedTasks" / "prepared"
    for relative in ("meta_train/math_query.parquet", "few_shot_eval/biology_test.parquet"):
        assert (snapshot / relative).read_bytes() == (source / relative).read_bytes()
    (trained,) = (snapshot / "train").iterdir()
    manifest = read_manifest(trained)
    assert manifest is not None
    assert (manifest.extra["project_name"], manifest.extra["experiment_name"]) == (
        "my-fomaml-experiment",
        "biology-math-physics",
    )
    report = json.loads((trained / "data" / "prepare_report.json").read_text())
    assert report["tasks"]["math"] == {"support": 9, "query": 12, "test": 9, "1shot": 1}
    assert report["caps"]["biology"] == {"support": 2, "query": 3}

    # tracking labels never change a fingerprint: a rename reuses everything
    stage["params"]["project_name"] = "renamed"
    experiment.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
    again = _run("run", experiment, "--root", root, "--data-dir", tmp_path)
    assert again.exit_code == 0, again.output
    assert "(2 stages: 2 reused, 0 created)" in again.output

    # an edited task file is new content: a new snapshot and a new training run
    math_query = source / "meta_train" / "math_query.parquet"
    math_query.write_bytes((source / "meta_train" / "math_support.parquet").read_bytes())
    plan = _run("plan", experiment, "--root", root, "--data-dir", tmp_path)
    assert plan.exit_code == 0, plan.output
    assert "2 stages: 0 hits, 2 misses" in plan.output


def test_a_task_file_the_dataset_lacks_is_named_before_anything_runs(tmp_path: Path) -> None:
    obj = yaml.safe_load((EXAMPLES / "fomaml-seed-tasks.yaml").read_text(encoding="utf-8"))
    obj["spec"]["training"][0]["params"]["tasks"][1]["support_files"] = ["meta_train/maths_support.parquet"]
    (tmp_path / "data").symlink_to(EXAMPLES / "data")
    experiment = tmp_path / "seed-tasks.yaml"
    experiment.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
    for command in ("plan", "run"):
        result = _run(command, experiment, "--root", tmp_path / "root", "--data-dir", tmp_path)
        assert result.exit_code == 2, result.output
        assert (
            "spec.training[0].params.tasks[1].support_files[0]: meta_train/maths_support.parquet is not in the "
            "SeedTasks dataset" in result.output
        )
    assert not (tmp_path / "root" / "_shared").exists()
