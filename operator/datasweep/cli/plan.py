"""`datasweep plan experiment.yaml`: points, hits and misses, and what the misses would cost. Creates nothing."""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from datasweep.api.stages.generate import GenerateParams, PriceEntry
from datasweep.api.worker import TRAINING_STAGES
from datasweep.cli.backends import ArtifactView, ClusterBackend, LocalBackend
from datasweep.cli.common import (
    BadInput,
    backend_options,
    choose_backend,
    dump,
    experiment_root,
    kubeconfig_available,
    output_option,
    print_table,
    wide_requested,
)
from datasweep.cli.run import experiment_options
from datasweep.core.imported import ImportedMatch, find_match
from datasweep.core.memory import StageMemory
from datasweep.core.plan import Point, StagePlan
from datasweep.local.checks import check_before_claim
from datasweep.local.experiment_file import (
    ExperimentFileError,
    LocalExperiment,
    load_experiment,
    parse_prompt_files,
)
from datasweep.local.registry import Registry
from datasweep.local.runner import imported_match
from datasweep.store.layout import SHARED, find_generate_dir, is_complete, training_relpath
from datasweep.store.progress import RequestReuseCounts
from datasweep.store.requests import RequestStore
from datasweep.store.verify import check_artifact
from datasweep.workloads.generate.inputs import GenerateInputError, read_splits
from datasweep.workloads.generate.pricing import estimate_cost, price_table
from datasweep.workloads.generate.tasks import plan_task
from datasweep.workloads.generate.tokens import LOCAL_TOKENIZER, TokenCounter, counter_for, counter_for_directory

DEFAULT_TRAINING_HOURS = 1.0


@dataclass
class StageEstimate:
    stage: StagePlan
    hit: bool
    where: str | None
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    gpu_hours: float = 0.0
    imported: ImportedMatch | None = None  # a hit on an imported seed-format directory
    token_counting: list[str] = field(default_factory=list)  # how prompt tokens were counted
    exact_prompts: bool = True  # counted with the models' tokenizers, not estimated
    # rephrasing only: each rephrasing as long as its original (prompt and completion), verdicts at max_tokens
    likely_tokens: int | None = None
    likely_cost_usd: float | None = None
    # request-level reuse: requests the volume's request store answers (not in `requests`), and what they cost
    stored_requests: int = 0
    saved_usd: float | None = 0.0
    saved_tokens: int = 0
    rows: int = 0
    rows_reused: int = 0  # records whose every request is stored

    def reuse(self) -> RequestReuseCounts:
        """The request store's part as a worker reports it (what `why` prints)."""
        return RequestReuseCounts(
            requests=self.requests + self.stored_requests,
            stored=self.stored_requests,
            to_send=self.requests,
            rows=self.rows,
            rows_reused=self.rows_reused,
            saved_tokens=self.saved_tokens,
            saved_usd=self.saved_usd,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.stage.dataset,
            "semanticName": self.stage.semantic_name,
            "stage": self.stage.name,
            "kind": self.stage.stage,
            "values": self.stage.values,
            "artifact": self.stage.artifact,
            "fingerprint": self.stage.fingerprint,
            "hit": self.hit,
            "where": self.where,
            "imported": None if self.imported is None else self.imported.to_dict(),
            "estimate": None
            if self.hit
            else {
                "requests": self.requests,
                "promptTokens": self.prompt_tokens,
                "completionTokens": self.completion_tokens,
                "costUsd": self.cost_usd,
                "gpuHours": self.gpu_hours,
                "tokenCounting": self.token_counting,
                "likelyTokens": self.likely_tokens,
                "likelyCostUsd": self.likely_cost_usd,
                "storedRequests": self.stored_requests,
                "savedByReuseUsd": self.saved_usd,
                "rows": self.rows,
                "rowsReused": self.rows_reused,
            },
        }


def _template_uses(template: str, field: str) -> int:
    """How often `{field}` appears in a prompt template."""
    return sum(1 for _, name, _, _ in string.Formatter().parse(template) if name and name.split(".")[0] == field)


def estimate_generate(
    experiment: LocalExperiment, stage: StagePlan, store: RequestStore | None = None
) -> StageEstimate:
    """What the worker would send, from the worker's own planning code; see `bound_note` for the rules.

    Beside the bound, for rephrasing, a likely figure: each rephrasing as long as its original. Requests that
    `store` (the volume's request store) answers are not sent: counted apart, with what they cost.
    """
    from datasweep.workloads.generate.reuse import RequestReuse, backend_family
    from datasweep.workloads.generate.worker import (  # imports openai
        generation_request,
        row_of,
        transformers_model_paths,
        validation_request,
    )

    params = GenerateParams.model_validate(stage.params)
    source = experiment.datasets[stage.dataset]
    try:
        splits = read_splits(source.directory, stage.dataset, params.id_field, params.task == "code-scenarios")
        items = plan_task(splits, params).items
    except GenerateInputError as exc:
        raise BadInput(f"dataset {stage.dataset} ({source.directory}): {exc}") from exc
    prices = {name: PriceEntry.model_validate(entry) for name, entry in (params.prices or {}).items()}
    table = price_table(params.backend, prices)
    batch = params.backend == "openai-batch"

    def cost_of(model: str, prompt: int, completion: int, total: float | None) -> float | None:
        cost = estimate_cost(model, prompt, completion, table, batch)
        return None if cost is None or total is None else round(total + cost, 6)

    local_models: dict[str, Path] = {}
    if params.backend == "transformers":
        try:
            local_models = transformers_model_paths(
                params, experiment.model_dir(stage.base_model, "spec.generation.modelPath")
            )
        except (GenerateInputError, ExperimentFileError) as exc:
            raise BadInput(str(exc)) from exc

    def counter_of(model: str) -> TokenCounter:
        return counter_for_directory(str(local_models[model])) if model in local_models else counter_for(model)

    reuse = None
    if store is not None and params.request_reuse:
        reuse = RequestReuse(store, backend_family(params, local_models or None), params.cache_version)
    all_items = items
    stored = reuse.stored([generation_request(item, params) for item in items]) if reuse else {}
    stored_validation = {}
    if reuse is not None and params.validation is not None:
        stored_validation = reuse.stored(
            [
                validation_request(item, stored[item.custom_id].text, params)
                for item in items
                if item.custom_id in stored
            ]
        )
    saved_usd: float | None = 0.0
    saved_tokens = sum(a.prompt_tokens + a.completion_tokens for a in [*stored.values(), *stored_validation.values()])
    rows: dict[str, bool] = {}
    for item in items:
        whole = item.custom_id in stored and (params.validation is None or item.validation_id in stored_validation)
        rows[row_of(item)] = rows.get(row_of(item), True) and whole
    judge_model = params.validation.model if params.validation else params.model
    for model, answers in ((params.model, list(stored.values())), (judge_model, list(stored_validation.values()))):
        if answers:  # priced on the summed tokens, as the worker prices its savedByReuse
            prompt = sum(a.prompt_tokens for a in answers)
            saved_usd = cost_of(model, prompt, sum(a.completion_tokens for a in answers), saved_usd)
    items = [item for item in all_items if item.custom_id not in stored]
    judged = [item for item in all_items if item.validation_id not in stored_validation]

    counter = counter_of(params.model)
    counters = [counter]
    prompt_tokens = sum(counter.chat(generation_request(item, params).body["messages"]) for item in items)
    requests = len(items)
    completion_tokens = requests * params.max_tokens
    cost = cost_of(params.model, prompt_tokens, completion_tokens, 0.0)
    rephrase = params.task == "rephrase"
    likely_completion = sum(min(params.max_tokens, counter.count(item.original)) for item in items)
    likely_tokens = prompt_tokens + likely_completion
    likely_cost = cost_of(params.model, prompt_tokens, likely_completion, 0.0)
    if params.validation is not None:
        judge = counter_of(params.validation.model)
        counters.append(judge)
        model = params.validation.model

        def judge_prompt(item: Any, generated: str) -> int:
            return judge.chat(validation_request(item, generated, params).body["messages"])

        # the generated text is not known yet: counted at its most, max_tokens, wherever the prompt shows it
        generated = _template_uses(params.validation.prompt, "rephrased") * params.max_tokens
        val_prompt = sum(judge_prompt(item, "") + generated for item in judged)
        val_completion = len(judged) * params.validation.max_tokens
        cost = cost_of(model, val_prompt, val_completion, cost)
        prompt_tokens += val_prompt
        completion_tokens += val_completion
        if rephrase:
            likely_prompt = sum(judge_prompt(item, item.original) for item in judged)
            likely_tokens += likely_prompt + val_completion
            likely_cost = cost_of(model, likely_prompt, val_completion, likely_cost)
        requests += len(judged)
    estimate = StageEstimate(
        stage,
        False,
        None,
        requests,
        prompt_tokens,
        completion_tokens,
        cost,
        token_counting=sorted({c.method for c in counters}),
        exact_prompts=all(c.exact for c in counters),
    )
    if rephrase:
        estimate.likely_tokens, estimate.likely_cost_usd = likely_tokens, likely_cost
    estimate.stored_requests, estimate.saved_usd = len(stored) + len(stored_validation), saved_usd
    estimate.saved_tokens, estimate.rows, estimate.rows_reused = saved_tokens, len(rows), sum(rows.values())
    return estimate


def bound_note(misses: list[StageEstimate]) -> str:
    """How plan's token numbers are made, in words (printed under the table)."""
    generate = [e for e in misses if e.stage.stage == "generate"]
    if not generate:
        return ""
    methods = sorted({method for e in generate for method in e.token_counting})
    limits = sorted({int(e.stage.params["max_tokens"]) for e in generate})
    judge = sorted(
        {int(e.stage.params["validation"]["max_tokens"]) for e in generate if e.stage.params.get("validation")}
    )
    completions = f"max_tokens per request ({', '.join(map(str, limits))} per generation"
    completions += f", {', '.join(map(str, judge))} per validation)" if judge else ")"
    exact = all(e.exact_prompts for e in generate)
    local = any(method.startswith(LOCAL_TOKENIZER) for method in methods)
    framing = "as its chat template renders them" if local else "plus the chat framing (3 per message, 3 per reply)"
    lines = [
        "how the estimate is made: prompt tokens = every request the worker will send (its own planning of the "
        f"records), counted with {'; '.join(methods)}, {framing}"
        + ("; a validation prompt counts the generated text at max_tokens" if judge else ""),
        f"completion tokens = {completions}, the most each request can return: real completions are shorter, so "
        "real spend is usually well below",
    ]
    if not exact:
        lines.append(
            "note: prompt tokens are estimated, not counted, where the model's tokenizer was not available (see "
            "above): the total is then no strict bound"
        )
    return "\n".join(lines)


def estimate_training(stage: StagePlan, hours: float) -> StageEstimate:
    gpus = stage.resources.gpus * stage.resources.nodes
    return StageEstimate(stage, False, None, gpu_hours=round(gpus * hours, 3))


def _memory_dict(memory: StageMemory | None) -> dict[str, Any] | None:
    if memory is None:
        return None
    return memory.estimate.to_dict() if memory.estimate is not None else {"note": memory.note}


def local_request_store(backend: LocalBackend | ClusterBackend) -> RequestStore | None:
    """The request store a local root's workers consult (a cluster's volume is not read from here)."""
    return RequestStore.under(backend.root / SHARED) if isinstance(backend, LocalBackend) else None


def local_hits(root: Path, stage: StagePlan, generate_rel: str | None) -> tuple[bool, str | None]:
    if stage.stage not in TRAINING_STAGES:  # the point's data stage: generate, or dataset (prepared data)
        rel = find_generate_dir(root, stage.dataset, stage.semantic_name, stage.fingerprint)
    else:
        rel = training_relpath(generate_rel, stage.stage, stage.fingerprint) if generate_rel else None
    # what `datasweep run` would reuse: complete, and its manifest's files there with their sizes (store/verify.py)
    return (rel is not None and is_complete(root / rel) and not check_artifact(root / rel)), rel


@dataclass(frozen=True)
class StageMatch:
    """A planned stage as the place it would run finds it: a hit, a hit on an imported directory, or a miss."""

    stage: StagePlan
    hit: bool
    where: str | None  # the hit's directory (a cluster: its path and phase); a local miss: where it would go
    found: ArtifactView | None = None  # the Artifact listed under its name with its fingerprint, complete or not
    imported: ImportedMatch | None = None


def match_stages(
    backend: LocalBackend | ClusterBackend,
    experiment: LocalExperiment,
    points: Iterable[Point],
    artifacts: Sequence[ArtifactView] = (),
) -> Iterator[StageMatch]:
    """Each stage of `points`, matched as `datasweep run` (a local root) or the operator (a cluster) would:
    `artifacts` are those listed there (on a cluster, a hit is one of them)."""
    by_name = {a.name: a for a in artifacts}
    ready_imported = [a for a in artifacts if a.imported and a.ready]
    force = experiment.spec.force_regenerate
    for point in points:
        generate_rel: str | None = None
        for stage in point.stages:
            found = by_name.get(stage.artifact)
            if found is not None and found.fingerprint != stage.fingerprint:
                found = None  # another fingerprint under the planned name: the operator never reuses it
            imported = None
            sha256 = experiment.datasets[stage.dataset].sha256
            if isinstance(backend, ClusterBackend):
                hit, where = found is not None, (f"{found.path} ({found.phase})" if found else None)
                if not hit and not force and stage.stage == "generate":  # as the operator matches (experiment.py)
                    imported = find_match(stage.params, stage.dataset, sha256, ready_imported)
            else:
                hit, where = local_hits(backend.root, stage, generate_rel)
                if not hit and not force:
                    imported = imported_match(Registry(backend.root), backend.root, stage, sha256)
                if imported is None and stage.stage not in TRAINING_STAGES:
                    generate_rel = where if hit else None  # a damaged one is produced again, its training too
            if imported is not None:
                generate_rel = imported.path
            yield StageMatch(stage, hit, where, found, imported)


@click.command("plan")
@experiment_options
@backend_options
@output_option
@click.option(
    "--hours-per-training",
    type=click.FloatRange(min=0),
    default=DEFAULT_TRAINING_HOURS,
    show_default=True,
    help="assumed duration of one training stage for the GPU-hour estimate",
)
def plan(
    experiment_file: Path,
    data_dir: Path | None,
    prompt_files: tuple[str, ...],
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    output: str,
    hours_per_training: float,
) -> None:
    """Show the points of EXPERIMENT_FILE, which are already there (hits) and what the misses would cost."""
    try:
        experiment = load_experiment(experiment_file, data_dir, parse_prompt_files(prompt_files))
        the_plan = experiment.plan()
        memory, _ = experiment.memory(the_plan)
    except ExperimentFileError as exc:
        raise BadInput(str(exc)) from exc
    local_default = root is None and not cluster and not (namespace or kube_context or kubeconfig_available())
    default_root, why = experiment_root(experiment_file) if local_default else (Path(), "--root")
    backend = choose_backend(root, cluster, namespace, kube_context, default_root=default_root)
    if backend.kind == "local":
        click.echo(f"store: {backend.root.resolve()} ({why})", err=True)
    try:  # what `run` (and its workers) would refuse, refused here first
        check_before_claim(experiment, the_plan, backend.root if backend.kind == "local" else None)
    except ExperimentFileError as exc:
        raise BadInput(str(exc)) from exc
    existing = backend.artifacts() if isinstance(backend, ClusterBackend) else []
    estimates: list[StageEstimate] = []
    for match in match_stages(backend, experiment, the_plan.points, existing):
        stage = match.stage
        if match.imported is not None:
            estimates.append(StageEstimate(stage, True, match.imported.path, imported=match.imported))
        elif match.hit:
            estimates.append(StageEstimate(stage, True, match.where))
        elif stage.stage == "generate":
            estimates.append(estimate_generate(experiment, stage, local_request_store(backend)))
        elif stage.stage == "dataset":
            estimates.append(StageEstimate(stage, False, None))  # a copy of the records: free
        else:
            estimates.append(estimate_training(stage, hours_per_training))
    misses = [e for e in estimates if not e.hit]
    priced = [e.cost_usd for e in misses if e.cost_usd is not None]
    unpriced = [e for e in misses if e.stage.stage == "generate" and e.cost_usd is None]
    point_hits = sum(
        all(e.hit for e in estimates if e.stage.fingerprint in {s.fingerprint for s in p.stages})
        for p in the_plan.points
    )
    totals: dict[str, Any] = {
        "points": len(the_plan.points),
        "pointsReused": point_hits,
        "stages": len(estimates),
        "hits": len(estimates) - len(misses),
        "misses": len(misses),
        "promptTokens": sum(e.prompt_tokens for e in misses),
        "completionTokens": sum(e.completion_tokens for e in misses),
        "costUsd": round(sum(priced), 4),
        "unpricedModels": sorted({str(e.stage.params.get("model")) for e in unpriced}),
        "gpuHours": round(sum(e.gpu_hours for e in misses), 3),
        "tokenCounting": sorted({method for e in misses for method in e.token_counting}),
        "tokensAreUpperBound": all(e.exact_prompts for e in misses),
        "likelyTokens": None,
        "likelyCostUsd": None,
        "storedRequests": sum(e.stored_requests for e in misses),
        "search": the_plan.search_note or None,
    }
    generate_misses = [e for e in misses if e.stage.stage == "generate"]
    if generate_misses and all(e.likely_tokens is not None for e in generate_misses):
        totals["likelyTokens"] = sum(e.likely_tokens or 0 for e in generate_misses)
        totals["likelyCostUsd"] = round(sum(e.likely_cost_usd or 0.0 for e in generate_misses), 4)
    if output != "table":
        data = {
            "experiment": experiment.name,
            "batch": the_plan.batch,
            "backend": backend.location,
            "totals": totals,
            "stages": [{**e.to_dict(), "memory": _memory_dict(memory.get(e.stage.artifact))} for e in estimates],
        }
        click.echo(dump(data, output))
        return
    for note in experiment.notes:
        click.echo(f"note: {note}", err=True)
    rows: list[tuple[str, ...]] = []
    for e in estimates:
        if e.hit:
            cost = "-"
        elif e.stage.stage == "dataset":
            cost = "copy, free"
        elif e.stage.stage == "generate":
            usd = "unpriced" if e.cost_usd is None else f"${e.cost_usd:.4f}"
            cost = f"{e.prompt_tokens + e.completion_tokens:,} tok, {usd}"
            if e.stored_requests:
                saved = "" if e.saved_usd is None else f", ${e.saved_usd:.4f} saved"
                cost += f"; {e.requests:,} to send, {e.stored_requests:,} stored{saved}"
                cost += f", {e.rows_reused:,} of {e.rows:,} rows wholly"
        else:
            cost = f"{e.gpu_hours:g} GPU-h"
        rows.append(
            (
                e.stage.dataset,
                e.stage.semantic_name,
                e.stage.label,
                "imported" if e.imported else ("hit" if e.hit else "MISS"),
                e.where or "",
                cost,
                memory[e.stage.artifact].cell() if e.stage.artifact in memory else "",
            )
        )
    columns: tuple[str, ...] = ("DATASET", "SEMANTIC", "STAGE", "STATUS", "WHERE", "ESTIMATE", "MEMORY")
    if wide_requested():  # the first difference from the nearest Artifact (datasweep why)
        from datasweep.cli.why import why_column

        whys = why_column(backend, experiment, [e.stage for e in misses])
        columns += ("WHY",)
        rows = [(*row, whys.get(e.stage.artifact, "")) for row, e in zip(rows, estimates, strict=True)]
    print_table(f"{experiment.name} -> {the_plan.batch} ({backend.location})", columns, rows)
    gpus = sorted({f"{m.estimate.gpu.name} ({m.estimate.gpu.why})" for m in memory.values() if m.estimate})
    if gpus:
        click.echo(f"MEMORY: estimate per GPU / memory of one GPU: {'; '.join(gpus)}; how: docs/stages.md")
    for e in estimates:
        if e.imported is not None:
            click.echo(f"{e.stage.artifact}: {e.imported.describe()}")
    click.echo(
        f"{totals['points']} points: {point_hits} reused, {totals['points'] - point_hits} to create; "
        f"{totals['stages']} stages: {totals['hits']} hits, {totals['misses']} misses"
    )
    if the_plan.search_note:
        click.echo(the_plan.search_note)
    for index, entry in enumerate(experiment.spec.training):
        per_point = sum(s.training_index == index for s in the_plan.points[0].training) if the_plan.points else 0
        if the_plan.search is not None:  # sampled: points differ in how many combinations they train
            count = sum(s.training_index == index for p in the_plan.points for s in p.training)
            click.echo(f"stage {entry.name}: {count} {entry.kind} Artifacts")
        elif per_point > 1:
            click.echo(
                f"stage {entry.name}: {per_point} combinations of its own grid per point, "
                f"{per_point * len(the_plan.points)} {entry.kind} Artifacts"
            )
    price_note = f" (unpriced: {', '.join(totals['unpricedModels'])})" if totals["unpricedModels"] else ""
    bound = "upper bound" if all(e.exact_prompts for e in misses) else "estimate"
    click.echo(
        f"estimated cost of the misses: {totals['promptTokens']:,} prompt + {totals['completionTokens']:,} "
        f"completion tokens ({bound}) = ${totals['costUsd']:.4f}{price_note}; "
        f"{totals['gpuHours']:g} GPU-hours at {hours_per_training:g} h per training stage"
    )
    note = bound_note(misses)
    if note:
        click.echo(note)
    if totals["likelyTokens"] is not None:
        click.echo(
            f"likely: about {totals['likelyTokens']:,} tokens = ${totals['likelyCostUsd']:.4f}, if each rephrasing "
            "is as long as its original (verdicts still at max_tokens)"
        )
    click.echo("nothing was created")
