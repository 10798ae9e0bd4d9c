"""The batch tools on a local root: import of a seed-format tree, gc safety, bad input, the kubectl plugin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import copa_dataset, generation, write_copa

from conftest import Invoke
from datasweep.cli import common
from datasweep.cli.backends import LocalBackend
from datasweep.cli.main import invoked_name
from datasweep.store.inputs import read_input
from datasweep.store.manifest import read_manifest

BATCH_A = "batch_20241229_temperature"
BATCH_B = "batch_20241230_topp"


def seed_dir(root: Path, dataset: str, name: str, md5: str, first_batch: str, **params: Any) -> Path:
    """One `_shared/<Dataset>/<name>/` directory as the seed's generator.py left it (no manifest.json)."""
    directory = root / "_shared" / dataset / name
    write_copa(directory / dataset) if dataset == "Copa" else (directory / dataset).mkdir(parents=True)
    if dataset != "Copa":
        (directory / dataset / f"{dataset.lower()}_train.jsonl").write_text('{"id": 1, "text": "x"}\n')
    (directory / ".fingerprint").write_text(md5 + "\n")
    metadata = {
        "experiment": {"batch_id": first_batch, "purpose": "study"},
        "fingerprint": md5,
        "semantic_name": name,
        "created_at": "2024-12-29T10:30:00",
        "parameters": {
            "gen_model": "gpt-4o",
            "gen_temperature": params.get("temperature", 0.7),
            "gen_top_p": params.get("top_p", 1.0),
            "gen_max_tokens": 256,
            "val_model": "gpt-4o",
            "val_temperature": 0.0,
            "gen_prompt_hash": "a1b2c3d4",
            "val_prompt_hash": "e5f6g7h8",
        },
    }
    (directory / "experiment_metadata.json").write_text(json.dumps(metadata, indent=2))
    (directory / "generation_config.yaml").write_text("generation:\n  model: gpt-4o\n")
    (directory / "scripts").mkdir()
    (directory / "scripts" / "rephrase_all.py").write_text("print('seed script')\n")
    (directory / "README.md").write_text(f"# {name}\n")
    return directory


def link(root: Path, batch: str, dataset: str, name: str) -> None:
    entry = root / batch / dataset / name
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.symlink_to(Path("..") / ".." / "_shared" / dataset / name)


@pytest.fixture
def seed_tree(tmp_path: Path) -> Path:
    """Seed 000's example tree after scenarios A and B (plus CB, and one directory no batch links to)."""
    root = tmp_path / "Data_v2" / "synthetic"
    seed_dir(root, "Copa", "temp05_topp10_gpt4o", "a00000000005", BATCH_A, temperature=0.5)
    seed_dir(root, "Copa", "temp07_topp10_gpt4o", "a1b2c3d4e5f6", BATCH_A)
    seed_dir(root, "Copa", "temp09_topp10_gpt4o", "a00000000009", BATCH_A, temperature=0.9)
    seed_dir(root, "Copa", "temp07_topp08_gpt4o", "b00000000008", BATCH_B, top_p=0.8)
    seed_dir(root, "Copa", "temp07_topp09_gpt4o", "b00000000009", BATCH_B, top_p=0.9)
    seed_dir(root, "CB", "temp07_topp10_gpt4o", "c00000000001", BATCH_A)
    seed_dir(root, "Copa", "temp03_topp10_gpt4o", "d00000000003", "batch_20241201_pilot", temperature=0.3)
    for name in ("temp05_topp10_gpt4o", "temp07_topp10_gpt4o", "temp09_topp10_gpt4o"):
        link(root, BATCH_A, "Copa", name)
    link(root, BATCH_A, "CB", "temp07_topp10_gpt4o")
    for name in ("temp07_topp08_gpt4o", "temp07_topp09_gpt4o", "temp07_topp10_gpt4o"):
        link(root, BATCH_B, "Copa", name)
    return root


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime)
        for p in root.rglob("*")
        if ".datasweep" not in p.parts
    }


def test_import_registers_a_seed_tree_without_moving_data(seed_tree: Path, invoke: Invoke) -> None:
    before = snapshot(seed_tree)
    result = invoke("import", seed_tree)
    assert "7 directories, 7 newly registered" in result.stdout
    after = snapshot(seed_tree)
    # no data moved or changed; each experiment directory gained only its manifest (what training reads)
    files = {path: value for path, value in before.items() if not Path(seed_tree / path).is_dir()}
    assert {path: after[path] for path in files} == files
    added = sorted(set(after) - set(before))
    assert added
    assert all(path.endswith("/manifest.json") for path in added)
    manifest = read_manifest(seed_tree / "_shared" / "Copa" / "temp07_topp10_gpt4o")
    assert manifest is not None
    assert manifest.outputs.data["train"][0].path == "Copa/copa_train.jsonl"
    assert [p.name for p in read_input(seed_tree / "_shared" / "Copa" / "temp07_topp10_gpt4o").files()] == [
        f"copa_{split}.jsonl" for split in ("train", "validation", "test") if split in manifest.outputs.data
    ]
    again = invoke("import", seed_tree, "--root", seed_tree)
    assert "0 newly registered" in again.stdout
    artifacts = json.loads(invoke("artifacts", "--root", seed_tree, "--dataset", "Copa", "-o", "json").stdout)
    assert len(artifacts) == 6
    by_name = {a["semanticName"]: a for a in artifacts}
    assert by_name["temp07_topp10_gpt4o"]["firstBatch"] == BATCH_A
    assert by_name["temp07_topp10_gpt4o"]["legacyFingerprint"] == "a1b2c3d4e5f6"
    assert by_name["temp07_topp10_gpt4o"]["manifest"]["rows"] == 5
    assert by_name["temp07_topp10_gpt4o"]["imported"] is True
    assert all(a["phase"] == "Ready" for a in artifacts)


def test_imported_tree_works_with_every_read_tool(seed_tree: Path, invoke: Invoke) -> None:
    invoke("import", seed_tree)
    batch = json.loads(invoke("batch", BATCH_B, "--root", seed_tree, "-o", "json").stdout)
    reused = {p["semanticName"]: (p["reused"], p["firstBatch"]) for p in batch["pointList"]}
    assert reused["temp07_topp10_gpt4o"] == (True, BATCH_A)
    assert reused["temp07_topp08_gpt4o"] == (False, BATCH_B)
    batches = json.loads(invoke("batches", "--root", seed_tree, "-o", "json").stdout)
    assert [(b["batchId"], b["points"]) for b in batches] == [(BATCH_A, 4), (BATCH_B, 3)]
    compared = json.loads(
        invoke(
            "compare", "Copa/temp07_topp10_gpt4o", "Copa/temp09_topp10_gpt4o", "--root", seed_tree, "-o", "json"
        ).stdout
    )
    assert compared["different"] == {"gen_temperature": {"first": 0.7, "second": 0.9}}
    assert compared["same"]["gen_model"] == "gpt-4o"
    resolved = json.loads(invoke("resolve", "a1b2c3d4e5f6", "--root", seed_tree, "-o", "json").stdout)
    assert resolved["sharedPath"] == f"{seed_tree}/_shared/Copa/temp07_topp10_gpt4o"
    assert len(resolved["batchPaths"]) == 2
    paths = invoke("paths", "--root", seed_tree, "--dataset", "CB", "--format", "yaml").stdout
    assert f"path: {seed_tree}/{BATCH_A}/CB/temp07_topp10_gpt4o/CB" in paths


def test_gc_never_deletes_what_a_batch_view_references(seed_tree: Path, invoke: Invoke) -> None:
    invoke("import", seed_tree)
    dry = json.loads(invoke("gc", "--root", seed_tree, "-o", "json").stdout)
    assert [c["path"] for c in dry["candidates"]] == ["_shared/Copa/temp03_topp10_gpt4o"]
    assert dry["bytes"] > 0
    assert (seed_tree / "_shared/Copa/temp03_topp10_gpt4o").is_dir()  # a dry run deletes nothing
    text = invoke("gc", "--root", seed_tree).output
    assert "would free" in text
    # FAQ Q2: deleting batch A's view leaves the data; only what no other view links to becomes collectable
    shutil.rmtree(seed_tree / BATCH_A)
    invoke("gc", "--root", seed_tree, "--yes")
    remaining = sorted(p.name for p in (seed_tree / "_shared" / "Copa").iterdir())
    assert remaining == ["temp07_topp08_gpt4o", "temp07_topp09_gpt4o", "temp07_topp10_gpt4o"]
    assert not (seed_tree / "_shared" / "CB" / "temp07_topp10_gpt4o").exists()
    for name in remaining:  # batch B's view still resolves
        assert (seed_tree / BATCH_B / "Copa" / name / "Copa").is_dir()
    artifacts = json.loads(invoke("artifacts", "--root", seed_tree, "-o", "json").stdout)
    assert sorted(a["semanticName"] for a in artifacts) == remaining


# ---- bad input: clear messages, exit code 2 ----


def test_unknown_batch(seed_tree: Path, invoke: Invoke) -> None:
    invoke("import", seed_tree)
    result = invoke("batch", "batch_20990101_nothing", "--root", seed_tree, expect=2)
    assert "unknown batch 'batch_20990101_nothing'" in result.output
    assert BATCH_A in result.output  # the known ones are listed


def test_ambiguous_name(seed_tree: Path, invoke: Invoke) -> None:
    invoke("import", seed_tree)
    result = invoke("compare", "temp07_topp10_gpt4o", "Copa/temp05_topp10_gpt4o", "--root", seed_tree, expect=2)
    assert "'temp07_topp10_gpt4o' is ambiguous, it matches 2 artifacts" in result.output
    assert "_shared/CB/temp07_topp10_gpt4o" in result.output
    missing = invoke("resolve", "Copa/temp99_topp10_gpt4o", "--root", seed_tree, expect=2)
    assert "no artifact matches" in missing.output


def test_broken_symlink(seed_tree: Path, invoke: Invoke) -> None:
    invoke("import", seed_tree)
    shutil.rmtree(seed_tree / "_shared" / "Copa" / "temp09_topp10_gpt4o")  # by hand, behind the tools' back
    result = invoke("resolve", f"{BATCH_A}/Copa/temp09_topp10_gpt4o", "--root", seed_tree, expect=2)
    assert "broken symlink" in result.output
    assert "../../_shared/Copa/temp09_topp10_gpt4o" in result.output
    view = invoke("batch", BATCH_A, "--root", seed_tree)
    assert "broken symlink" in view.output
    gc = json.loads(invoke("gc", "--root", seed_tree, "-o", "json").stdout)
    assert sorted((c["path"], c["reason"]) for c in gc["candidates"]) == [
        ("_shared/Copa/temp03_topp10_gpt4o", "no batch view links to it"),
        ("_shared/Copa/temp09_topp10_gpt4o", "its directory is gone: a stale record"),
    ]


def test_file_that_is_not_an_experiment(workspace: Path, invoke: Invoke) -> None:
    deployment = workspace / "deploy.yaml"
    deployment.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n")
    result = invoke("run", deployment, "--root", workspace / "root", expect=2)
    assert "not an Experiment (found: Deployment)" in result.output
    assert not (workspace / "root").exists()
    assert "no such file" in invoke("plan", workspace / "missing.yaml", "--root", workspace, expect=2).output
    broken = workspace / "broken.yaml"
    broken.write_text("kind: Experiment\nspec: [unclosed\n")
    assert "not valid YAML" in invoke("run", broken, expect=2).output


def test_invalid_spec_fields_are_named(workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke) -> None:
    bad = write_experiment("bad", {"batch": BATCH_A, "datasets": copa_dataset(), "generation": {"temperature": "hot"}})
    assert "spec.generation.temperature" in invoke("run", bad, "--root", workspace / "r", expect=2).output
    no_data = write_experiment(
        "nodata", {"batch": BATCH_A, "datasets": [{"name": "Copa", "source": {"path": "nowhere"}}]}
    )
    output = invoke("plan", no_data, "--root", workspace / "r", expect=2).output
    assert "spec.datasets[0].source.path" in output
    assert "--data-dir" in output


def test_config_map_prompt_needs_a_prompt_file(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    gen = generation(None)
    gen["prompt"] = {"configMapKeyRef": {"name": "prompts", "key": "rephrase"}}
    experiment = write_experiment("cm", {"batch": BATCH_A, "datasets": copa_dataset(), "generation": gen})
    output = invoke("plan", experiment, "--root", workspace / "r", expect=2).output
    assert "spec.generation.prompt.configMapKeyRef" in output
    assert "--prompt-file" in output
    prompt = workspace / "rephrase.txt"
    prompt.write_text("Say it differently: {text}")
    plan = invoke("plan", experiment, "--root", workspace / "r", "--prompt-file", f"generation={prompt}", "-o", "json")
    assert json.loads(plan.stdout)["totals"]["misses"] == 1


# ---- backend rule and the kubectl plugin ----


def test_backend_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not common.kubeconfig_available()
    backend = common.choose_backend(None, False, None, None)
    assert isinstance(backend, LocalBackend)
    assert backend.root == common.DEFAULT_ROOT
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert common.kubeconfig_available()
    assert isinstance(common.choose_backend(tmp_path, False, None, None), LocalBackend)  # --root wins


def test_kubectl_plugin_name() -> None:
    assert invoked_name("/usr/local/bin/kubectl-datasweep") == "kubectl datasweep"
    assert invoked_name("/usr/local/bin/datasweep") == "datasweep"
    script = Path(sys.executable).with_name("kubectl-datasweep")
    if not script.exists():
        pytest.skip("the kubectl-datasweep console script is not installed in this environment")
    result = subprocess.run([str(script), "batches", "--help"], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stderr
    assert "Usage: kubectl datasweep batches" in result.stdout
