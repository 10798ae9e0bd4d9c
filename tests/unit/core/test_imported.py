"""The match of a planned generate point with an imported seed-format directory (core/imported.py)."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from datasweep.api.experiment import GRID_AXES
from datasweep.core.imported import (
    SEED_PARAMS,
    find_match,
    match_point,
    plan_matches,
    recorded_params,
    seed_prompt_hash,
)

PROMPT = "Réécris : {text}"  # accented: NFC and NFD differ


@dataclass
class Record:
    name: str = "copa-imported"
    dataset: str = "Copa"
    path: str = "_shared/Copa/temp07_topp10_gpt4o"
    params: dict[str, Any] = field(default_factory=dict)
    source_sha256: str | None = "a" * 64


def point(**changes: Any) -> dict[str, Any]:
    return {
        "task": "rephrase",
        "model": "gpt-4o",
        "temperature": 0.7,
        "top_p": 1.0,
        "max_tokens": 256,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "prompt": PROMPT,
        "validation": None,
        **changes,
    }


def seed(**changes: Any) -> dict[str, Any]:
    return {
        "gen_model": "gpt-4o",
        "gen_temperature": 0.7,
        "gen_prompt_hash": hashlib.md5(PROMPT.encode()).hexdigest()[:8],
        **changes,
    }


def test_the_seed_prompt_hash_is_md5_of_the_nfc_text() -> None:
    assert seed_prompt_hash("abc") == hashlib.md5(b"abc").hexdigest()
    assert seed_prompt_hash(unicodedata.normalize("NFD", PROMPT)) == hashlib.md5(PROMPT.encode()).hexdigest()


def test_missing_parameters_must_be_at_the_seed_defaults() -> None:
    found = match_point(point(), "Copa", "a" * 64, Record(params=seed()))
    assert found is not None
    assert found.matched[:3] == ("gen_model=gpt-4o", "gen_temperature=0.7", "gen_top_p=1.0")
    assert match_point(point(top_p=0.9), "Copa", "a" * 64, Record(params=seed())) is None
    assert match_point(point(max_tokens=128), "Copa", "a" * 64, Record(params=seed())) is None


def test_every_input_must_match() -> None:
    ok = Record(params=seed())
    assert match_point(point(), "CB", "a" * 64, ok) is None
    assert match_point(point(), "Copa", "b" * 64, ok) is None
    assert match_point(point(), "Copa", "a" * 64, Record(params=seed(), source_sha256=None)) is None
    assert match_point(point(task="code-scenarios"), "Copa", "a" * 64, ok) is None
    assert match_point(point(prompt=PROMPT + " "), "Copa", "a" * 64, ok) is None
    assert match_point(point(), "Copa", "a" * 64, Record(params=seed(gen_prompt_hash="abc"))) is None
    assert match_point(point(), "Copa", "a" * 64, Record(params={"note": "no parameters"})) is None
    validated = point(validation={"model": "gpt-4o", "temperature": 0.0, "prompt": "{original}"})
    assert match_point(validated, "Copa", "a" * 64, ok) is None  # the imported records were not validated


def test_the_first_match_by_path_wins() -> None:
    later = Record(name="b", path="_shared/Copa/z", params=seed())
    earlier = Record(name="a", path="_shared/Copa/a", params=seed())
    found = find_match(point(), "Copa", "a" * 64, [later, earlier])
    assert found is not None
    assert found.artifact == "a"


def test_the_recorded_params_are_what_a_match_reads() -> None:
    recorded = seed(gen_top_p=1.0, note="kept by the seed", experiment={"batch_id": "b"})
    assert recorded_params(recorded) == {k: v for k, v in recorded.items() if k not in ("note", "experiment")}
    kept = match_point(point(), "Copa", "a" * 64, Record(params=recorded_params(recorded)))
    assert kept is not None
    assert kept == match_point(point(), "Copa", "a" * 64, Record(params=recorded))


def test_every_grid_axis_is_a_recorded_parameter() -> None:
    """So two points of one plan never match the same imported directory (plan_matches relies on it)."""
    assert set(GRID_AXES) <= {path[0] for path, _ in SEED_PARAMS.values() if len(path) == 1}


@dataclass
class Stage:
    artifact: str
    params: dict[str, Any]
    stage: str = "generate"
    dataset: str = "Copa"
    canonical: dict[str, Any] = field(default_factory=lambda: {"dataset": {"name": "Copa", "sha256": "a" * 64}})


def test_plan_matches_compares_the_hash_each_point_was_planned_with() -> None:
    records = {"Copa": [Record(params=seed())]}
    stages = [
        Stage("hit", point()),
        Stage("other-temperature", point(temperature=0.9)),
        Stage("other-data", point(), canonical={"dataset": {"name": "Copa", "sha256": "b" * 64}}),
        Stage("prepared", point(), stage="dataset"),
    ]
    found = plan_matches(stages, lambda dataset: records.get(dataset, []))  # type: ignore[arg-type]
    assert {k: v.artifact for k, v in found.items()} == {"hit": "copa-imported"}
