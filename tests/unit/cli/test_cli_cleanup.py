"""Mistakes you can undo: a failed claim neither squats its name nor survives `gc`; points leave a batch;
the store is where the user expects it and says so; files are readable by the team.

Workers are `fake_worker.py` (failure under the test's control); the fix changes a parameter outside the
semantic name (the prompt), so the fixed rerun has another fingerprint under the same semantic name.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli_helpers import copa_dataset, fake_worker_command, generation

from conftest import Invoke

BATCH = "batch_20250102_cleanup"


def spec(prompt: str, temperatures: list[float] | None = None) -> dict[str, Any]:
    gen = generation(None, temperature=temperatures or [0.5, 0.7])
    gen["prompt"] = {"text": prompt}
    return {"batch": BATCH, "datasets": copa_dataset(), "generation": gen}


def _fail_then_fix(workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke) -> Path:
    root = workspace / "root"
    broken = write_experiment("copa", spec("Rephrase: {text}"))
    invoke("run", broken, "--root", root, "--worker-command", fake_worker_command("fail"), expect=1)
    fixed = write_experiment("copa", spec("Rephrase, keeping the meaning: {text}"))
    result = invoke("run", fixed, "--root", root, "--worker-command", fake_worker_command())
    assert "moved to _shared/Copa/.temp05_topp10_gpt4o.abandoned-" in result.output
    return root


def test_a_fixed_rerun_takes_the_clean_name_and_gc_offers_the_failed_claim(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    root = _fail_then_fix(workspace, write_experiment, invoke)
    names = sorted(p.name for p in (root / "_shared" / "Copa").iterdir() if not p.name.startswith("."))
    assert names == ["temp05_topp10_gpt4o", "temp07_topp10_gpt4o"]  # no `_<fp>` suffixes
    batches = json.loads(invoke("batches", "--root", root, "-o", "json").stdout)
    assert (batches[0]["points"], batches[0]["ready"]) == (2, 2)
    invoke("compare", "temp05_topp10_gpt4o", "temp07_topp10_gpt4o", "--root", root)  # not ambiguous
    gc = json.loads(invoke("gc", "--root", root, "-o", "json").stdout)
    offered = sorted((c["path"].split(".abandoned-")[0], c["reason"]) for c in gc["candidates"])
    why = "failed, never completed (a rerun would start it over)"
    assert offered == [("_shared/Copa/.temp05_topp10_gpt4o", why), ("_shared/Copa/.temp07_topp10_gpt4o", why)]
    invoke("gc", "--root", root, "--yes")
    assert not [p for p in (root / "_shared" / "Copa").iterdir() if p.name.startswith(".")]
    assert json.loads(invoke("gc", "--root", root, "-o", "json").stdout)["candidates"] == []
    assert len(json.loads(invoke("artifacts", "--root", root, "-o", "json").stdout)) == 2


def test_gc_offers_a_failed_point_that_a_batch_view_links_and_removes_the_view(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    root = workspace / "root"
    experiment = write_experiment("copa", spec("Rephrase: {text}", [0.5]))
    invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command("fail"), expect=1)
    paths = invoke("paths", "--root", root, "--batch", BATCH, expect=2)
    assert "1 point(s) not ready are left out" in paths.output
    gc = json.loads(invoke("gc", "--root", root, "-o", "json").stdout)
    assert [(c["path"], c["batchViews"]) for c in gc["candidates"]] == [
        ("_shared/Copa/temp05_topp10_gpt4o", [f"{BATCH}/Copa/temp05_topp10_gpt4o"])
    ]
    invoke("gc", "--root", root, "--yes")
    assert not (root / BATCH / "Copa" / "temp05_topp10_gpt4o").is_symlink()
    view = json.loads(invoke("batch", BATCH, "--root", root, "-o", "json").stdout)
    assert view["points"] == 0


def test_a_bad_model_path_leaves_no_claim(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    root = workspace / "root"
    broken = spec("Rephrase: {text}", [0.5])
    broken["generation"].update(backend="transformers", modelPath={"path": "models/missing"})
    result = invoke("run", write_experiment("copa", broken), "--root", root, expect=2)
    assert "spec.generation.modelPath.path" in result.output
    assert not (root / "_shared").exists()
    assert not (root / ".datasweep" / "artifacts").exists()


def test_unlink_removes_a_point_or_an_experiment_from_a_batch(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    root = workspace / "root"
    invoke(
        "run",
        write_experiment("copa", spec("Rephrase: {text}")),
        "--root",
        root,
        "--worker-command",
        fake_worker_command(),
    )
    invoke("unlink", BATCH, "Copa/temp05_topp10_gpt4o", "--root", root)
    view = json.loads(invoke("batch", BATCH, "--root", root, "-o", "json").stdout)
    assert [p["semanticName"] for p in view["pointList"]] == ["temp07_topp10_gpt4o"]
    gc = json.loads(invoke("gc", "--root", root, "-o", "json").stdout)
    assert [c["path"] for c in gc["candidates"]] == ["_shared/Copa/temp05_topp10_gpt4o"]
    bad = invoke("unlink", BATCH, "Copa/nothing", "--root", root, expect=2)
    assert "not a point of" in bad.output
    assert "Copa/temp07_topp10_gpt4o" in bad.output
    invoke("unlink", BATCH, "--experiment", "copa", "--root", root)
    view = json.loads(invoke("batch", BATCH, "--root", root, "-o", "json").stdout)
    assert (view["points"], view["experiments"]) == (0, [])


def test_the_store_beside_the_experiment_file_is_found_and_named(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke, monkeypatch: Any
) -> None:
    experiment = write_experiment("copa", spec("Rephrase: {text}", [0.5]))
    monkeypatch.chdir(workspace)
    first = invoke("run", experiment, "--worker-command", fake_worker_command())
    store = (workspace / "Data_v2" / "synthetic").resolve()
    assert f"store: {store} (new, in the current directory)" in first.output
    elsewhere = workspace / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    plan = invoke("plan", experiment)
    assert f"store: {store} (found beside {experiment})" in plan.output
    assert "1 points: 1 reused, 0 to create" in plan.output
    (elsewhere / "Data_v2" / "synthetic").mkdir(parents=True)
    ambiguous = invoke("run", experiment, expect=2)
    assert "two local stores could be meant" in ambiguous.output
    assert "--root" in ambiguous.output


def test_files_written_by_a_run_are_readable_by_the_team(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    old = os.umask(0o022)
    try:
        root = workspace / "root"
        invoke(
            "run",
            write_experiment("copa", spec("Rephrase: {text}", [0.5])),
            "--root",
            root,
            "--worker-command",
            fake_worker_command(),
        )
        dest = workspace / "legacy"
        invoke("publish", "temp05_topp10_gpt4o", "--dest", dest, "--root", root)
    finally:
        os.umask(old)
    written = [*(root / ".datasweep").rglob("*.json"), *(root / "_shared").rglob("manifest.json"), *dest.rglob("*")]
    assert written
    modes = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in written if p.is_file()}
    assert set(modes.values()) == {"0o644"}, modes
