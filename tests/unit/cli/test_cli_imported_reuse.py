"""Seed 000: an imported seed-format directory is reused by a new point whose parameters, prompt hashes and
dataset hash all match (`datasweep import --source`); `plan` shows it as "imported" with what was matched.

The tree is written as seed 000's generator.py leaves it (datasweep.testing.seed_tree, which the cluster's
e2e test shares).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import copa_dataset, fake_model, fake_worker_command, generation

from conftest import Invoke
from datasweep.local.registry import Registry
from datasweep.testing.seed_tree import JUDGE, NAME, REPHRASE, seed_generated_dir


@pytest.fixture
def tree(workspace: Path) -> Path:
    root = workspace / "Data_v2" / "synthetic"
    seed_generated_dir(root, workspace / "raw" / "superglue" / "copa")
    return root


def spec(**changes: Any) -> dict[str, Any]:
    gen = {**generation(None, temperature=0.7, topP=1.0), "prompt": {"text": REPHRASE}}
    gen.update(changes.pop("generation", {}))
    return {
        "batch": "batch_20250105_reuse",
        "datasets": copa_dataset(),
        "generation": gen,
        "validation": {"model": "gpt-4o", "temperature": 0.0, "prompt": {"text": JUDGE}},
        **changes,
    }


def plan_rows(invoke: Invoke, experiment: Path, tree: Path, workspace: Path) -> list[dict[str, Any]]:
    out = invoke("plan", experiment, "--root", tree, "--data-dir", workspace, "-o", "json").stdout
    rows: list[dict[str, Any]] = json.loads(out)["stages"]
    return rows


def test_a_matching_point_reuses_the_imported_directory(
    tree: Path, workspace: Path, invoke: Invoke, write_experiment: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = write_experiment("reuse", spec())
    invoke("import", tree)
    # without the dataset hash the imported directory cannot be matched
    (row,) = plan_rows(invoke, experiment, tree, workspace)
    assert (row["hit"], row["imported"]) == (False, None)

    invoke("import", tree, "--source", f"Copa={workspace / 'raw' / 'superglue' / 'copa'}")
    (row,) = plan_rows(invoke, experiment, tree, workspace)
    assert row["hit"] is True
    assert row["imported"]["path"] == f"_shared/Copa/{NAME}"
    assert row["imported"]["matched"] == [
        "gen_model=gpt-4o",
        "gen_temperature=0.7",
        "gen_top_p=1.0",
        "gen_max_tokens=256",
        "gen_frequency_penalty=0.0",
        "gen_presence_penalty=0.0",
        "val_model=gpt-4o",
        "val_temperature=0.0",
        "gen_prompt_hash",
        "val_prompt_hash",
        "dataset sha256",
    ]
    monkeypatch.delenv("OPENAI_API_KEY")  # nothing will be sent: no key is needed (checks.py)
    text = invoke("plan", experiment, "--root", tree, "--data-dir", workspace).stdout
    assert "imported" in text.split("STATUS")[1]
    assert f"imported _shared/Copa/{NAME} (matched gen_model=gpt-4o" in text
    assert "1 points: 1 reused, 0 to create" in text

    before = sorted(p.name for p in (tree / "_shared" / "Copa").iterdir())
    # nothing is generated (the openai backend would need the network): the imported directory is the point
    result = invoke("run", experiment, "--root", tree, "--data-dir", workspace)
    assert "1 points: 1 reused, 0 created" in result.output
    assert f"reusing imported _shared/Copa/{NAME}" in result.output
    assert sorted(p.name for p in (tree / "_shared" / "Copa").iterdir()) == before
    view = tree / "batch_20250105_reuse" / "Copa" / NAME
    assert view.is_symlink()
    assert view.resolve() == (tree / "_shared" / "Copa" / NAME).resolve()
    (imported,) = [a for a in Registry(tree).artifacts() if a.imported]
    assert imported.consumers == ["reuse"]
    assert imported.first_batch == "batch_20241229_temperature"
    batch = json.loads(invoke("batch", "batch_20250105_reuse", "--root", tree, "-o", "json").stdout)
    assert [(p["reused"], p["firstBatch"]) for p in batch["pointList"]] == [(True, "batch_20241229_temperature")]


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"generation": {"temperature": 0.9}}, "another temperature"),
        ({"generation": {"prompt": {"text": REPHRASE + " Be brief."}}}, "another prompt"),
        ({"validation": {"model": "gpt-4o", "temperature": 0.0, "prompt": {"text": JUDGE + "!"}}}, "another judge"),
        ({"validation": None}, "no validation, the imported records were validated"),
        ({"generation": {"maxTokens": 512}}, "another max_tokens"),
        ({"forceRegenerate": True}, "forceRegenerate"),
    ],
)
def test_a_point_that_differs_is_not_reused(
    tree: Path,
    workspace: Path,
    invoke: Invoke,
    write_experiment: Callable[..., Path],
    changes: dict[str, Any],
    why: str,
) -> None:
    invoke("import", tree, "--source", f"Copa={workspace / 'raw' / 'superglue' / 'copa'}")
    experiment = write_experiment("differs", spec(**changes))
    (row, *_) = plan_rows(invoke, experiment, tree, workspace)
    assert (row["hit"], row["imported"]) == (False, None), why


def test_other_source_data_is_not_reused(
    tree: Path, workspace: Path, invoke: Invoke, write_experiment: Callable[..., Path]
) -> None:
    original = workspace / "raw" / "superglue" / "copa"
    invoke("import", tree, "--source", f"Copa={original}")
    shutil.copytree(original, workspace / "edited")
    with (workspace / "edited" / "copa_train.jsonl").open("a") as handle:
        handle.write(json.dumps({"id": "extra", "text": "One more."}) + "\n")
    edited = spec(datasets=[{"name": "Copa", "source": {"path": "edited"}}])
    (row,) = plan_rows(invoke, write_experiment("edited", edited), tree, workspace)
    assert (row["hit"], row["imported"]) == (False, None)


def test_bad_source_options_are_named(tree: Path, workspace: Path, invoke: Invoke) -> None:
    result = invoke("import", tree, "--source", "Copa", expect=2)
    assert "--source 'Copa': give DATASET=DIR" in result.output
    result = invoke("import", tree, "--source", f"CB={workspace / 'raw' / 'superglue' / 'copa'}", expect=2)
    assert "no split files" in result.output or "the tree has no _shared/CB/" in result.output
    result = invoke("import", tree, "--source", f"Copa={workspace / 'nowhere'}", expect=2)
    assert "does not exist" in result.output


def test_training_on_a_reused_imported_directory_nests_under_it(
    tree: Path, workspace: Path, invoke: Invoke, write_experiment: Callable[..., Path]
) -> None:
    invoke("import", tree, "--source", f"Copa={workspace / 'raw' / 'superglue' / 'copa'}")
    params = {"task_key": "id", "prompt_template": "{original_text}", "response_template": " {text}"}
    training = [{"name": "meta", "kind": "fomaml", "baseModel": {"path": "models/tiny"}, "params": params}]
    fake_model(workspace / "models" / "tiny")
    experiment = write_experiment("train-on-imported", spec(training=training))
    rows = plan_rows(invoke, experiment, tree, workspace)
    assert [(r["stage"], r["hit"], r["imported"] is not None) for r in rows] == [
        ("generate", True, True),
        ("meta", False, False),
    ]
    result = invoke(
        "run", experiment, "--root", tree, "--data-dir", workspace, "--worker-command", fake_worker_command()
    )
    assert "1 points: 0 reused, 1 created (2 stages: 1 reused, 1 created)" in result.output
    (trained,) = (tree / "_shared" / "Copa" / NAME / "train").iterdir()
    assert trained.name.startswith("fomaml-")
    # the training worker read the imported directory (the fake worker records its input)
    assert (trained / "model.txt").read_text() == f"trained on {(tree / '_shared' / 'Copa' / NAME).resolve()}\n"
    again = invoke("run", experiment, "--root", tree, "--data-dir", workspace)
    assert "1 points: 1 reused, 0 created (2 stages: 2 reused, 0 created)" in again.output
