"""The CRDs are generated from the models: stale files fail, and each has what SPEC section 3 asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasweep.api import crdgen

REPO = Path(__file__).resolve().parents[2]


def test_generated_crds_are_up_to_date() -> None:
    assert crdgen.main(["--check", "--out", str(REPO / "crds"), "--chart", str(REPO / "charts/datasweep/crds")]) == 0, (
        "run `make crds`"
    )


@pytest.mark.parametrize(("name", "short"), [("experiments", "exp"), ("artifacts", "art"), ("batches", "bat")])
def test_each_crd_is_structural_with_status_columns_short_names_and_category(name: str, short: str) -> None:
    crd = crdgen.build_crds()[f"datasweep.io_{name}.yaml"]
    names = crd["spec"]["names"]
    assert names["shortNames"] == [short]
    assert names["categories"] == ["datasweep"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Age"}

    def check(schema: dict[str, object], where: str) -> None:
        assert "$ref" not in schema, where
        assert "anyOf" not in schema, where
        untyped = ("x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string")
        assert "type" in schema or any(schema.get(key) for key in untyped), where
        for key, sub in (schema.get("properties") or {}).items():  # type: ignore[attr-defined]
            check(sub, f"{where}.{key}")
        if isinstance(schema.get("items"), dict):
            check(schema["items"], f"{where}[]")  # type: ignore[arg-type]

    check(version["schema"]["openAPIV3Schema"]["properties"]["spec"], "spec")


def test_experiment_columns_read_conditions_and_counts() -> None:
    columns = crdgen.build_crds()["datasweep.io_experiments.yaml"]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == [
        "Batch",
        "Points",
        "Reused",
        "Running",
        "Done",
        "Failed",
        "Progress",
        "Cost",
        "Saved",
        "Best",
        "Status",
        "Age",
    ]
    assert columns[6]["jsonPath"] == ".status.progress.summary"
    assert columns[7]["jsonPath"] == ".status.progress.cost"
    # request-level reuse, with -o wide only
    assert (columns[8]["jsonPath"], columns[8]["priority"]) == (".status.progress.saved", 1)
    assert columns[9]["jsonPath"] == ".status.best.summary"
    assert columns[10]["jsonPath"] == '.status.conditions[?(@.type=="Succeeded")].reason'


def test_artifact_columns_show_phase_and_the_ready_reason_beside_the_existing_ones() -> None:
    columns = crdgen.build_crds()["datasweep.io_artifacts.yaml"]["spec"]["versions"][0]["additionalPrinterColumns"]
    by_name = {c["name"]: c["jsonPath"] for c in columns}
    assert by_name["Phase"] == ".status.phase"
    assert by_name["Reason"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert by_name["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert {"Stage", "Dataset", "Semantic", "First Batch", "First Experiment", "Age"} <= set(by_name)


def test_a_param_two_kinds_share_keeps_both_kinds_values() -> None:
    # moe-steer and qa both have input_format: the CRD still refuses a value neither knows
    params, _ = crdgen.training_params_schema()
    assert params["properties"]["input_format"]["enum"] == ["paired", "labeled", "squad", "reports"]


def test_the_search_algorithm_is_an_enum_so_kubectl_apply_refuses_an_unknown_one() -> None:
    spec = crdgen.experiment_spec_schema()
    assert spec["properties"]["search"]["properties"]["algorithm"]["enum"] == ["random"]
