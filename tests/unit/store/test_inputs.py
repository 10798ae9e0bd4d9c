"""The manifest's roles and the one reader training stages use for their inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datasweep.api.worker import WorkerSpec
from datasweep.store.inputs import InputError, read_input
from datasweep.store.manifest import ManifestError, Roles, finalize_artifact, write_manifest
from datasweep.workloads.dataset.worker import DatasetInputError, run_dataset


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_an_artifact_is_read_only_through_its_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", "/dev/null")
    art = tmp_path / "art"
    _write(art / "Copa" / "copa_train.jsonl", [{"id": 1}, {"id": 2}])
    _write(art / "Copa" / "copa_test.jsonl", [{"id": 3}])
    _write(art / "rejected" / "copa_train.jsonl", [{"id": 4}])
    _write(art / "train" / "qa-x" / "y_train.jsonl", [{"id": 5}])  # another stage's output
    (art / "report.json").write_text("{}", encoding="utf-8")
    roles = Roles(
        data={"train": ["Copa/copa_train.jsonl"], "test": ["Copa/copa_test.jsonl"]},
        rejected={"train": ["rejected/copa_train.jsonl"]},
        reports=["report.json"],
    )
    manifest = finalize_artifact(art, fingerprint="a" * 64, stage="generate", roles=roles)
    assert manifest.outputs.data["train"][0].rows == 2
    assert manifest.outputs.rejected["train"][0].rows == 1
    found = read_input(art)
    assert found.files() == [art / "Copa" / "copa_train.jsonl", art / "Copa" / "copa_test.jsonl"]
    assert found.files("validation") == []

    with pytest.raises(ManifestError, match=r"data file Copa/missing\.jsonl"):
        write_manifest(art, fingerprint="a" * 64, stage="generate", roles=Roles(data={"train": ["Copa/missing.jsonl"]}))


def test_an_artifact_without_data_roles_is_refused_with_the_fix(tmp_path: Path) -> None:
    _write(tmp_path / "Copa" / "copa_train.jsonl", [{"id": 1}])
    write_manifest(tmp_path, fingerprint="b" * 64, stage="generate")
    with pytest.raises(InputError, match=r"lists no accepted data files .*`datasweep import`"):
        read_input(tmp_path)


def test_raw_directories_and_files(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _write(raw / "mine_train.jsonl", [{"id": 1}])
    _write(raw / "dev.jsonl", [{"id": 2}])
    _write(raw / "extra.jsonl", [{"id": 3}])
    found = read_input(raw, "Mine")
    assert {split: [p.name for p in paths] for split, paths in found.splits.items()} == {
        "train": ["mine_train.jsonl"],
        "validation": ["dev.jsonl"],
    }
    assert [p.name for p in found.unsplit] == ["extra.jsonl"]
    assert read_input(raw / "dev.jsonl").splits == {"validation": (raw / "dev.jsonl",)}
    seed_dir = tmp_path / "seed"
    _write(seed_dir / "Copa" / "copa_train.jsonl", [{"id": 1}])
    with pytest.raises(InputError, match="register the tree with `datasweep import`"):
        read_input(seed_dir)
    with pytest.raises(InputError, match="input data not found"):
        read_input(tmp_path / "nowhere")


def test_the_dataset_stage_snapshots_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", "/dev/null")
    source = tmp_path / "src"
    _write(source / "mine_train.jsonl", [{"q": 1}, {"q": 2}])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"q": 3}]), source / "mine_test.parquet")
    spec = WorkerSpec(
        stage="dataset",
        artifact="mine-prepared-abc",
        fingerprint="c" * 64,
        dataset="Mine",
        semantic_name="prepared",
        output_dir=str(tmp_path / "out"),
        source_dir=str(source),
    )
    manifest = run_dataset(spec)
    assert {s: [e.path for e in entries] for s, entries in manifest.outputs.data.items()} == {
        "train": ["Mine/mine_train.jsonl"],
        "test": ["Mine/mine_test.parquet"],
    }
    assert manifest.outputs.data["test"][0].rows == 1
    assert (tmp_path / "out" / "Mine" / "mine_train.jsonl").read_bytes() == (source / "mine_train.jsonl").read_bytes()
    assert run_dataset(spec) == manifest  # complete: nothing is copied again
    with pytest.raises(DatasetInputError, match="no split files"):
        run_dataset(spec.model_copy(update={"output_dir": str(tmp_path / "o2"), "source_dir": str(tmp_path)}))
