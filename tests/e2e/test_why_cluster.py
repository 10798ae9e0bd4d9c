"""`datasweep why` on the cluster (kwok completes the Jobs): an Experiment's miss names the changed temperature."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from datasweep import recipes
from datasweep.cli.main import cli
from tests.e2e.operator_harness import apply, condition, experiment, get, running_operator, wait_for

pytestmark = pytest.mark.e2e


def done(control_plane: Any, namespace: str, name: str) -> Any:
    obj = get(control_plane, namespace, "experiment", name)
    return obj if condition(obj, "Succeeded").get("status") == "True" else None


def why(namespace: str, *args: str | Path) -> Result:
    result = CliRunner().invoke(cli, ["why", *map(str, args), "--cluster", "-n", namespace], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_why_against_an_experiment_names_the_temperature(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    first = experiment("why-first", batch="batch_20250101_first", generation={"temperature": 0.7, "topP": 1.0})
    second = experiment(
        "why-second", batch="batch_20250102_second", generation={"temperature": [0.7, 0.75], "topP": 1.0}
    )
    with running_operator(ns, data_root, tmp_path):
        apply(control_plane, ns, first)
        wait_for("the first experiment done", lambda: done(control_plane, ns, "why-first"))
        apply(control_plane, ns, second)
        wait_for("the second experiment done", lambda: done(control_plane, ns, "why-second"))

    shown = why(ns, "why-second").stdout
    assert "Copa/temp075_topp10_gpt4o generate: MISS" in shown, shown
    assert "nearest: copa-temp07-topp10-gpt4o-" in shown
    assert "1 field differs:\n    temperature 0.7 → 0.75\n" in shown
    made = "Copa/temp07_topp10_gpt4o generate: hit copa-temp07-topp10-gpt4o-"
    assert made in shown
    assert "made by experiment why-first (Job " in shown
    assert "for batch batch_20250101_first, completed " in shown

    # the operator's Events name the points
    events = get(control_plane, ns, "events")["items"]
    messages = {e["reason"]: e["message"] for e in events if e["involvedObject"]["name"] == "why-second"}
    assert messages["CacheMiss"].startswith("1 point(s) need new data: Copa/temp075_topp10_gpt4o (")
    assert messages["CacheHit"] == "1 point(s) reuse data an identical configuration produced: Copa/temp07_topp10_gpt4o"

    # an experiment file against the cluster's Artifacts (its dataset read where the file is), and plan's WHY
    third = experiment("why-third", batch="batch_20250103_third", generation={"temperature": 0.9, "topP": 1.0})
    path = data_root / "why-third.yaml"
    path.write_text(yaml.safe_dump(third), encoding="utf-8")
    # two Artifacts are one field away (0.7 and 0.75): the newer wins the tie, or the first name within a second
    assert re.search(r"1 field differs:\n    temperature 0\.75? → 0\.9\n", why(ns, path).stdout)
    wide = CliRunner().invoke(cli, ["plan", str(path), "--cluster", "-n", ns, "-o", "wide"], catch_exceptions=False)
    assert wide.exit_code == 0, wide.output
    assert "WHY" in wide.stdout
    assert " → 0.9" in wide.stdout


def test_after_a_recipe_bump_the_operator_produces_again_and_why_names_the_recipe(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the operator runs in this process (KopfRunner): a bumped generate recipe is what a new operator image brings
    ns = ready_namespace
    before = experiment("recipe-before", batch="batch_20250101_before", generation={"temperature": 0.7, "topP": 1.0})
    after = experiment("recipe-after", batch="batch_20250102_after", generation={"temperature": 0.7, "topP": 1.0})
    version = recipes.RECIPES["generate"].version
    with running_operator(ns, data_root, tmp_path):
        apply(control_plane, ns, before)
        wait_for("the experiment before the bump done", lambda: done(control_plane, ns, "recipe-before"))
        monkeypatch.setitem(
            recipes.RECIPES, "generate", dataclasses.replace(recipes.RECIPES["generate"], version=version + 1)
        )
        apply(control_plane, ns, after)
        wait_for("the experiment after the bump done", lambda: done(control_plane, ns, "recipe-after"))

    artifacts = get(control_plane, ns, "artifacts")["items"]
    assert len(artifacts) == 2  # the same temperature, produced again: the old result is kept, not reused
    shown = why(ns, "recipe-after").stdout
    assert "Copa/temp07_topp10_gpt4o generate: MISS" in shown, shown
    assert f"1 field differs:\n    recipe {version} → {version + 1}\n" in shown
