"""Seed 000 scenarios A, B and C end to end: `datasweep run` with the real generate worker and the local
OpenAI-compatible test server, then the batch tools on the local root."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import copa_dataset, experiment_yaml, generation, write_copa
from click.testing import CliRunner, Result

from datasweep import __version__
from datasweep.cli.main import cli
from datasweep.recipes import recipe_version

BATCH_A = "batch_20241229_temperature"
BATCH_B = "batch_20241230_topp"


@dataclass
class Scenarios:
    workspace: Path
    root: Path
    first_a: Result
    second_a: Result
    first_b: Result

    def cli(self, *args: str, expect: int = 0) -> Result:
        result = CliRunner().invoke(cli, [*args, "--root", str(self.root)], catch_exceptions=False)
        assert result.exit_code == expect, result.output
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)


def _run(experiment: Path, root: Path) -> Result:
    result = CliRunner().invoke(cli, ["run", str(experiment), "--root", str(root), "--jobs", "3"])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory, openai_server: Any) -> Scenarios:
    pytest.importorskip("datasweep.workloads.generate.worker", reason="the generate worker is not in this tree")
    workspace = tmp_path_factory.mktemp("seed000")
    write_copa(workspace / "raw" / "superglue" / "copa")
    root = workspace / "Data_v2" / "synthetic"
    a = workspace / "copa_temperature.yaml"
    a.write_text(
        experiment_yaml(
            "copa-temperature",
            {
                "batch": BATCH_A,
                "purpose": "temperature_study",
                "datasets": copa_dataset(),
                "generation": generation(openai_server.url, temperature=[0.5, 0.7, 0.9], topP=1.0),
                "validation": {"model": "gpt-4o", "temperature": 0.0},
            },
        )
    )
    b = workspace / "copa_topp.yaml"
    b.write_text(
        experiment_yaml(
            "copa-topp",
            {
                "batch": BATCH_B,
                "purpose": "topp_study",
                "datasets": copa_dataset(),
                "generation": generation(openai_server.url, temperature=0.7, topP=[0.8, 0.9, 1.0]),
                "validation": {"model": "gpt-4o", "temperature": 0.0},
            },
        )
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", "test-key")
        patch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
        first_a = _run(a, root)
        second_a = _run(a, root)
        first_b = _run(b, root)
    return Scenarios(workspace, root, first_a, second_a, first_b)


# ---- scenario A: the first batch, a temperature sweep ----


def test_scenario_a_creates_three_points_then_reuses_all(scenarios: Scenarios) -> None:
    assert "3 points: 0 reused, 3 created" in scenarios.first_a.output
    assert "3 points: 3 reused, 0 created" in scenarios.second_a.output
    assert "0 stage(s) to run" in scenarios.second_a.output


def test_scenario_a_layout_is_the_seed_layout(scenarios: Scenarios) -> None:
    root = scenarios.root
    for temp in ("05", "07", "09"):
        name = f"temp{temp}_topp10_gpt4o"
        shared = root / "_shared" / "Copa" / name
        assert (shared / "manifest.json").is_file()
        assert len((shared / ".fingerprint").read_text().strip()) == 64
        train = (shared / "Copa" / "copa_train.jsonl").read_text().splitlines()
        assert len(train) == 3
        assert "rephrased:" in json.dumps(json.loads(train[0]))
        link = root / BATCH_A / "Copa" / name
        assert link.is_symlink()
        assert os.readlink(link) == f"../../_shared/Copa/{name}"  # relative: the tree can move
        assert (link / "Copa" / "copa_train.jsonl").is_file()


def test_scenario_a_registry_and_logs(scenarios: Scenarios) -> None:
    state = scenarios.root / ".datasweep"
    records = [json.loads(p.read_text()) for p in sorted((state / "artifacts").glob("*.json"))]
    assert len(records) == 5  # 3 from A, 2 new from B
    for record in records:
        assert record["phase"] == "Ready"
        assert record["firstBatch"] in (BATCH_A, BATCH_B)
        assert record["usage"]["requests"] > 0
        assert (state / "specs" / f"{record['name']}.yaml").is_file()
        assert (state / "logs" / f"{record['name']}-1.log").is_file()
    spec = yaml.safe_load((state / "specs" / f"{records[0]['name']}.yaml").read_text())
    assert spec["kind"] == "WorkerSpec"
    assert Path(spec["outputDir"]).is_absolute()


def test_scenario_a_batch_shows_new_points(scenarios: Scenarios) -> None:
    view = scenarios.json("batch", BATCH_A)
    assert [p["semanticName"] for p in view["pointList"]] == [
        "temp05_topp10_gpt4o",
        "temp07_topp10_gpt4o",
        "temp09_topp10_gpt4o",
    ]
    assert not any(p["reused"] for p in view["pointList"])
    assert all(p["ready"] for p in view["pointList"])
    table = scenarios.cli("batch", BATCH_A, "--verbose").stdout
    assert "no (new)" in table
    assert "copa-temperature" in table


# ---- scenario B: the second batch, a top_p sweep that reuses temp07_topp10 ----


def test_scenario_b_reuses_the_point_of_batch_a(scenarios: Scenarios) -> None:
    assert "3 points: 1 reused, 2 created" in scenarios.first_b.output
    view = scenarios.json("batch", BATCH_B)
    reused = {p["semanticName"]: (p["reused"], p["firstBatch"]) for p in view["pointList"]}
    assert reused == {
        "temp07_topp08_gpt4o": (False, BATCH_B),
        "temp07_topp09_gpt4o": (False, BATCH_B),
        "temp07_topp10_gpt4o": (True, BATCH_A),
    }
    link = scenarios.root / BATCH_B / "Copa" / "temp07_topp10_gpt4o"
    assert link.resolve() == (scenarios.root / "_shared" / "Copa" / "temp07_topp10_gpt4o").resolve()
    table = scenarios.cli("batch", BATCH_B).stdout
    assert f"yes (first batch: {BATCH_A})" in table


# ---- scenario C: viewing and comparing ----


def test_scenario_c_batches(scenarios: Scenarios) -> None:
    batches = scenarios.json("batches")
    assert [(b["batchId"], b["points"], b["reused"]) for b in batches] == [(BATCH_A, 3, 0), (BATCH_B, 3, 1)]
    table = scenarios.cli("batches", "--verbose").stdout
    assert "2 batches" in table
    assert "Copa: 3" in table


def test_scenario_c_five_physical_artifacts_for_six_points(scenarios: Scenarios) -> None:
    artifacts = scenarios.json("artifacts", "--dataset", "Copa")
    assert len(artifacts) == 5
    by_name = {a["semanticName"]: a for a in artifacts}
    shared = by_name["temp07_topp10_gpt4o"]
    assert shared["firstBatch"] == BATCH_A
    assert shared["consumers"] == ["copa-temperature", "copa-topp"]
    assert by_name["temp07_topp08_gpt4o"]["firstBatch"] == BATCH_B
    assert scenarios.json("artifacts", "--dataset", "CB") == []


def test_artifacts_show_what_produced_them(scenarios: Scenarios) -> None:
    # provenance (issue 25): the worker's versions and the models and fingerprints the API answered with
    for artifact in scenarios.json("artifacts", "--dataset", "Copa"):
        provenance = artifact["provenance"]
        assert (provenance["datasweepVersion"], provenance["recipe"]) == (__version__, recipe_version("generate"))
        answers = sum(provenance["models"].values())
        assert list(provenance["models"]) == ["gpt-4o"]  # generation and validation model
        assert answers == 2 * 5  # 5 Copa records (3 train, 1 validation, 1 test): generated, then validated
        assert provenance["systemFingerprints"] == {"fp_datasweep_test": answers}
        assert provenance["image"] is None  # a local run: no pod
    lines = scenarios.cli("artifacts", "-o", "wide").stdout.splitlines()
    header = next(line for line in lines if line.startswith("DATASET"))
    assert header.split()[-5:] == ["RECIPE", "DATASWEEP", "IMAGE", "MODELS", "GPU"]
    row = next(line for line in lines if "temp07_topp10_gpt4o" in line)
    assert row.split()[-6:] == ["1", __version__, "-", "gpt-4o", "x10", "-"]


def test_scenario_c_compare(scenarios: Scenarios) -> None:
    result = scenarios.json("compare", "Copa/temp07_topp10_gpt4o", "Copa/temp09_topp10_gpt4o")
    assert result["different"] == {"params.temperature": {"first": 0.7, "second": 0.9}}
    assert result["same"]["params.model"] == "gpt-4o"
    assert result["same"]["params.top_p"] == 1.0
    assert result["same"]["params.validation.model"] == "gpt-4o"
    text = scenarios.cli("compare", "Copa/temp07_topp10_gpt4o", "Copa/temp09_topp10_gpt4o").stdout
    assert "different parameters" in text
    assert "params.temperature" in text


def test_paths_for_training_configs(scenarios: Scenarios) -> None:
    text = scenarios.cli("paths", "--dataset", "Copa", "--batch", BATCH_A, "--format", "yaml").stdout
    documents = [d for d in yaml.safe_load_all(text) if d]
    expected = f"{scenarios.root}/{BATCH_A}/Copa/temp07_topp10_gpt4o/Copa"
    assert {"data": {"path": expected}} in documents
    assert len(documents) == 3
    rows = json.loads(scenarios.cli("paths", "--format", "json").stdout)
    assert len(rows) == 6
    assert all(Path(r["data"]["path"]).is_dir() for r in rows)


def test_resolve_batch_path_shared_path_and_fingerprint(scenarios: Scenarios) -> None:
    batch_path = f"Data_v2/synthetic/{BATCH_B}/Copa/temp07_topp10_gpt4o/Copa"
    by_batch = scenarios.json("resolve", batch_path)
    assert by_batch["sharedPath"] == f"{scenarios.root}/_shared/Copa/temp07_topp10_gpt4o/Copa"
    assert sorted(by_batch["batchPaths"]) == [
        f"{scenarios.root}/{batch}/Copa/temp07_topp10_gpt4o/Copa" for batch in (BATCH_A, BATCH_B)
    ]
    by_fingerprint = scenarios.json("resolve", by_batch["shortFingerprint"])
    assert by_fingerprint["artifact"] == by_batch["artifact"]
    by_shared = scenarios.json("resolve", "_shared/Copa/temp07_topp10_gpt4o")
    assert by_shared["fingerprint"] == by_batch["fingerprint"]


def test_publish_to_the_flat_legacy_layout(scenarios: Scenarios, tmp_path: Path) -> None:
    dest = tmp_path / "Data" / "rejection_sampling" / "0_data"
    scenarios.cli("publish", "Copa/temp07_topp08_gpt4o", "--dest", str(dest))
    assert sorted(p.name for p in (dest / "Copa").iterdir()) == [
        "copa_test.jsonl",
        "copa_train.jsonl",
        "copa_validation.jsonl",
    ]
    again = scenarios.cli("publish", "Copa/temp07_topp08_gpt4o", "--dest", str(dest), expect=2)
    assert "--overwrite" in again.output


def test_plan_after_the_runs_is_all_hits(scenarios: Scenarios) -> None:
    plan = scenarios.json("plan", str(scenarios.workspace / "copa_topp.yaml"))
    assert plan["totals"]["hits"] == 3
    assert plan["totals"]["misses"] == 0
    assert plan["totals"]["pointsReused"] == 3


def test_gc_keeps_everything_a_batch_view_references(scenarios: Scenarios) -> None:
    result = scenarios.json("gc")
    assert result["candidates"] == []
    assert result["dryRun"] is True
