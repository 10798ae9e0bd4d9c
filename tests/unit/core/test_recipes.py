"""Recipe versions (issue 25): the code that decides a stage kind's results is pinned to its recipe version.

`SOURCES` records every accepted state of that code, per kind: the recipe version it ran as, the hash of its
code (docstrings, comments and formatting left out) and why. When the code changes, the test below fails
until a row for the new hash is appended, either with a bumped recipe version (the results change) or with the
same version (they do not). docs/cli.md, "Recipe versions", says how to decide.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from datetime import datetime
from pathlib import Path

import pytest

from datasweep import recipes
from datasweep.api.experiment import ExperimentSpec
from datasweep.api.worker import StageKind
from datasweep.core.plan import PlanInputs, plan_experiment
from datasweep.recipes import RECIPES
from tests.unit.core.test_fingerprint_coverage import base_spec

# (kind, recipe version, source hash, why): append rows, never edit old ones; the last row of a kind is current.
SOURCES: list[tuple[str, int, str, str]] = [
    ("generate", 1, "e27944c7d87f138f", "the first recorded source"),
    ("dataset", 1, "9f6930c071f4176b", "the first recorded source"),
    ("fomaml", 1, "a6716e5306938c11", "the first recorded source"),
    ("moe-steer", 1, "999e9987e7ecc328", "the first recorded source"),
    ("qa", 1, "f1a8844a3eb7aa7f", "the first recorded source"),
    (
        "generate",
        1,
        "bff4d8b4d3871f9a",
        "store gc-safe, identical requests sent once (one draw), reuse reported, templates in core, faster lookups",
    ),
    ("dataset", 1, "cf41bf1760144fec", "layout.py: short() from _common.py, check samples moved in; same code"),
]

HERE = "tests/unit/core/test_recipes.py"


def normalized_source(source: str) -> str:
    """The code as the interpreter sees it: no comments, no docstrings, one formatting (ast.unparse)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def module_path(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None, f"datasweep/recipes.py names {name}, which does not exist"
    assert spec.origin is not None, f"{name} has no source file"
    return Path(spec.origin)


def source_hash(modules: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in modules:
        digest.update(f"{name}\n{normalized_source(module_path(name).read_text(encoding='utf-8'))}\n".encode())
    return digest.hexdigest()[:16]


def what_to_do(kind: str, version: int, current: str, recorded: tuple[str, int, str, str] | None) -> str:
    modules = "\n".join(f"  - {name}" for name in RECIPES[kind].modules)
    was = f"recorded {recorded[2]} for recipe {recorded[1]}" if recorded else "no row recorded"
    return (
        f"The code that decides {kind}'s results changed: its source hash is {current} ({was}). Modules:\n"
        f"{modules}\n"
        "Decide, then do exactly one of:\n"
        f"  (a) results change (another prompt, parsing, metric, training step): bump {kind}'s version in "
        f"operator/datasweep/recipes.py to {version + 1} and append to SOURCES in {HERE}:\n"
        f'        ("{kind}", {version + 1}, "{current}", "<what changed in the results>"),\n'
        f"      Every {kind} fingerprint changes (and those trained on it): old results stay on disk and are not "
        "reused.\n"
        f"  (b) results stay the same (a refactor, a log line, an error message): append to SOURCES in {HERE}:\n"
        f'        ("{kind}", {version}, "{current}", "<why the results are the same>"),\n'
        "See docs/cli.md, 'Recipe versions'."
    )


@pytest.mark.parametrize("kind", sorted(RECIPES))
def test_result_deciding_code_is_pinned_to_its_recipe_version(kind: str) -> None:
    version = RECIPES[kind].version
    rows = [row for row in SOURCES if row[0] == kind]
    current = source_hash(RECIPES[kind].modules)
    last = rows[-1] if rows else None
    if last is None or last[2] != current:
        pytest.fail(what_to_do(kind, last[1] if last else version, current, last))
    assert last[1] == version, (
        f"datasweep/recipes.py gives {kind} recipe {version} but the last SOURCES row of {kind} in {HERE} says "
        f"{last[1]}: append a row for recipe {version} (or put the version back)"
    )


def test_sources_rows_are_well_formed() -> None:
    assert {row[0] for row in SOURCES} == set(RECIPES), "every kind has rows, every row names a kind"
    for kind in RECIPES:
        versions = [row[1] for row in SOURCES if row[0] == kind]
        assert versions == sorted(versions), f"{kind}: recipe versions only go up ({versions})"
    for row in SOURCES:
        assert len(row[2]) == 16, f"{row}: the hash has 16 hex digits"
        assert row[3].strip(), f"{row}: every row says why"


def test_every_stage_kind_has_a_recipe() -> None:
    assert set(RECIPES) == set(StageKind.__args__)  # type: ignore[attr-defined]
    for recipe in RECIPES.values():
        for name in recipe.modules:
            module_path(name)


def test_formatting_comments_and_docstrings_do_not_count_but_code_does() -> None:
    base = '''"""Module doc."""
def score(a, b):
    """Doc."""
    return a + b  # why
'''
    reformatted = '''"""Another module doc."""


def score(
    a,
    b,
):
    # a comment
    return (a + b)
'''
    changed = base.replace("a + b", "a - b")
    assert normalized_source(base) == normalized_source(reformatted)
    assert normalized_source(base) != normalized_source(changed)


def test_a_recipe_bump_changes_every_fingerprint_of_the_kind_and_those_trained_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = base_spec()
    inputs = PlanInputs({"Copa": "a" * 64, "CB": "a" * 64}, created=datetime(2024, 12, 29))

    def plan() -> list[tuple[str, str, int]]:
        stages = plan_experiment(ExperimentSpec.model_validate(raw), inputs).stages
        return [(stage.stage, stage.fingerprint, stage.canonical["recipe"]) for stage in stages]

    before = plan()
    assert before
    assert all(recipe == 1 for _, _, recipe in before)
    monkeypatch.setitem(recipes.RECIPES, "generate", recipes.Recipe(2, RECIPES["generate"].modules))
    after = plan()
    assert [(stage, recipe) for stage, _, recipe in after] == [
        (stage, 2 if stage == "generate" else 1) for stage, _, _ in before
    ]
    assert not {fp for _, fp, _ in before} & {fp for _, fp, _ in after}
