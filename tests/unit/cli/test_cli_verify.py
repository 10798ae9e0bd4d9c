"""`datasweep verify` and the check before reuse in `datasweep run` / `plan`: a Ready Artifact with a file
deleted or changed is reported, not reused, produced again in a fresh directory; the damaged one is kept for gc."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli_helpers import copa_dataset, fake_worker_command, generation
from test_cli_cluster_views import FakeCustomObjects, fake_api

from conftest import Invoke
from datasweep.store.manifest import write_manifest

__all__ = ["fake_api"]  # the fixture

BATCH = "batch_20250101_verify"


def spec() -> dict[str, Any]:
    return {
        "batch": BATCH,
        "datasets": copa_dataset(),
        "generation": generation(None, temperature=[0.5, 0.7]),
        "validation": {"model": "gpt-4o", "temperature": 0.0},
    }


def ran(workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke) -> tuple[Path, Path]:
    experiment = write_experiment("verify-me", spec())
    root = workspace / "root"
    invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command())
    return experiment, root


def data_file(root: Path, temperature: str) -> Path:
    return next(root.glob(f"_shared/Copa/temp{temperature}_*/Copa/copa_train.jsonl"))


def test_verify_reports_each_artifact_and_fails_on_damage(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    experiment, root = ran(workspace, write_experiment, invoke)
    ok = json.loads(invoke("verify", "--all", "--root", root, "-o", "json").stdout)
    assert [row["status"] for row in ok] == ["OK", "OK"]
    invoke("verify", experiment, "--root", root, "--deep")  # the experiment file names what it uses

    data_file(root, "05").unlink()
    changed = data_file(root, "07")
    changed.write_text(changed.read_text().replace("a", "b"))  # same size: only --deep sees it
    result = invoke("verify", "verify-me", "--root", root, "-o", "json", expect=1)
    rows = {row["path"].split("/")[-1][:6]: row for row in json.loads(result.stdout)}
    assert rows["temp05"]["status"] == "DAMAGED"
    assert rows["temp05"]["problems"] == ["missing file Copa/copa_train.jsonl"]
    assert rows["temp07"]["status"] == "OK"
    deep = json.loads(invoke("verify", "--all", "--root", root, "--deep", "-o", "json", expect=1).stdout)
    assert sorted(tuple(row["problems"]) for row in deep) == [
        ("missing file Copa/copa_train.jsonl",),
        ("sha256 of Copa/copa_train.jsonl differs",),
    ]
    table = invoke("verify", "--all", "--root", root, expect=1).output
    assert "DAMAGED" in table
    assert "missing file Copa/copa_train.jsonl" in table
    assert "1 damaged" in table


def test_verify_answers_bad_targets(workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke) -> None:
    _, root = ran(workspace, write_experiment, invoke)
    assert "or --all" in invoke("verify", "--root", root, expect=2).output
    assert "no Artifact of that name" in invoke("verify", "nobody", "--root", root, expect=2).output


def test_run_does_not_reuse_a_damaged_artifact_and_keeps_it_for_gc(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    experiment, root = ran(workspace, write_experiment, invoke)
    damaged_dir = data_file(root, "05").parent.parent
    data_file(root, "05").unlink()

    planned = json.loads(invoke("plan", experiment, "--root", root, "-o", "json").stdout)
    assert planned["totals"]["pointsReused"] == 1  # the damaged point is a miss

    again = invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command())
    assert "2 points: 1 reused, 1 created" in again.output
    assert "not reused, missing file Copa/copa_train.jsonl: producing it again" in again.output
    aside = root / "_shared/Copa" / f".{damaged_dir.name}.damaged-1"
    assert aside.is_dir()
    assert (aside / "manifest.json").is_file()
    assert not (aside / "Copa" / "copa_train.jsonl").exists()
    assert (damaged_dir / "Copa" / "copa_train.jsonl").is_file()  # the replacement, in a fresh directory
    invoke("verify", "--all", "--root", root)
    third = invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command())
    assert "2 points: 2 reused, 0 created" in third.output

    gc = json.loads(invoke("gc", "--root", root, "-o", "json").stdout)
    assert [(c["path"], c["reason"]) for c in gc["candidates"]] == [
        (str(aside.relative_to(root)), "damaged (datasweep verify), produced again")
    ]
    invoke("gc", "--root", root, "--yes")
    assert not aside.exists()
    invoke("verify", "--all", "--root", root)


def test_verify_on_the_cluster_reads_the_volume_where_it_is_mounted(
    fake_api: FakeCustomObjects, tmp_path: Path, invoke: Invoke
) -> None:
    temp07, temp05, temp03 = (
        next(a for a in fake_api.objects["artifacts"] if a["spec"]["semanticName"].startswith(t))
        for t in ("temp07", "temp05", "temp03")
    )
    directory = tmp_path / temp07["spec"]["storage"]["path"]
    (directory / "Copa").mkdir(parents=True)
    (directory / "Copa" / "copa_train.jsonl").write_text('{"id": 1}\n')
    write_manifest(directory, fingerprint=temp07["spec"]["fingerprint"], stage="generate")
    (directory / "Copa" / "copa_train.jsonl").write_text("")
    # temp05: no manifest recorded, none on the volume (kwok): nothing to check; temp03 recorded one, its
    # directory is gone
    temp03["status"]["manifest"] = {"files": 1, "rows": 1, "bytes": 10, "sha256": "0" * 64}
    assert "needs --data-root" in invoke("verify", "--all", "--cluster", expect=2).output
    result = invoke("verify", "--all", "--cluster", "--data-root", tmp_path, "-o", "json", expect=1)
    rows = {row["artifact"]: row for row in json.loads(result.stdout)}
    assert rows[temp07["metadata"]["name"]]["problems"] == ["size of Copa/copa_train.jsonl 10 → 0"]
    assert rows[temp05["metadata"]["name"]]["status"] == "OK"
    assert rows[temp03["metadata"]["name"]]["problems"][0].startswith("missing directory")
    one = invoke("verify", "copa-topp", "--cluster", "--data-root", tmp_path, "-o", "json", expect=1)
    assert [row["artifact"] for row in json.loads(one.stdout)] == [temp07["metadata"]["name"]]
