"""Recipe versions: the version of the code that decides a stage kind's results, part of its fingerprint.

A fingerprint covers a stage's parameters, not the code that turns them into data or a model. Each stage
kind therefore has a recipe version, a top-level `recipe` key of its canonical parameters: bumping it gives
every Artifact of that kind (and, through the chained input fingerprints, everything trained on it) a new
fingerprint, so results the old code made stay on disk and are not reused. `RECIPES` names, per kind, the
modules whose code decides its results; tests/unit/core/test_recipes.py pins a hash of their code to the
version and fails when that code changes until the author bumps the version or records that the change
leaves results alone (docs/cli.md, "Recipe versions"). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    version: int
    modules: tuple[str, ...]  # dotted names of the modules whose code decides this kind's results


# Read by every kind: how records are read from files and where a training stage's input records are.
_RECORDS = ("datasweep.store.records",)
_TRAINING_INPUTS = ("datasweep.store.inputs", *_RECORDS)

RECIPES: dict[str, Recipe] = {
    "generate": Recipe(
        version=1,
        modules=(
            "datasweep.workloads.generate.worker",  # requests from records, outputs compiled from the answers
            "datasweep.workloads.generate.prompts",  # verdict parsing
            "datasweep.core.templates",  # prompt rendering
            "datasweep.workloads.generate.tasks",  # per-task requests and kept/rejected records
            "datasweep.workloads.generate.inputs",  # which source records, in which order
            "datasweep.workloads.generate.backends",  # request bodies, local generation, answer parsing
            "datasweep.workloads.generate.batch_api",  # Batch API request lines and answer parsing
            "datasweep.workloads.generate.reuse",  # which stored answer stands for a request
            "datasweep.store.requests",  # a request's identity in the request store
            *_RECORDS,
        ),
    ),
    "dataset": Recipe(
        version=1,
        modules=(
            "datasweep.workloads.dataset.worker",  # what is copied where
            "datasweep.store.layout",  # which files make a dataset
            *_RECORDS,
        ),
    ),
    "fomaml": Recipe(
        version=1,
        modules=(
            "datasweep.workloads.fomaml.stage",
            "datasweep.workloads.fomaml.data",
            "datasweep.workloads.fomaml.validate",  # what a prepared directory may hold
            "datasweep.workloads.fomaml.modeling",
            "datasweep.workloads.fomaml.trainer",
            "datasweep.workloads.fomaml.distributed",  # gradient averaging across ranks
            *_TRAINING_INPUTS,
        ),
    ),
    "moe-steer": Recipe(
        version=1,
        modules=(
            "datasweep.workloads.moe_steer.stage",
            "datasweep.workloads.moe_steer.data",
            "datasweep.workloads.moe_steer.encoding",
            "datasweep.workloads.moe_steer.experts",
            "datasweep.workloads.moe_steer.analysis",  # risk differences and expert selection
            "datasweep.workloads.moe_steer.training",
            *_TRAINING_INPUTS,
        ),
    ),
    "qa": Recipe(
        version=1,
        modules=(
            "datasweep.workloads.qa.stage",
            "datasweep.workloads.qa.convert",  # report records -> QA samples and negatives
            "datasweep.workloads.qa.data",
            "datasweep.workloads.qa.features",
            "datasweep.workloads.qa.loss",
            "datasweep.workloads.qa.modeling",
            "datasweep.workloads.qa.training",
            "datasweep.workloads.qa.postprocess",  # answer spans from logits
            "datasweep.workloads.qa.metrics",
            *_TRAINING_INPUTS,
        ),
    ),
}


def recipe_version(stage: str) -> int:
    """The recipe version of a stage kind (KeyError for a kind without one: every kind has one)."""
    return RECIPES[stage].version
