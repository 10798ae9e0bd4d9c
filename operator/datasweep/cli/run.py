"""`datasweep run experiment.yaml`: the Experiment on one machine (SPEC section 7)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from datasweep.api.experiment import Objective
from datasweep.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    BadInput,
    experiment_root,
    print_table,
    stderr_console,
)
from datasweep.core.metrics import Candidate, best_of, recorded_metrics
from datasweep.core.plan import Plan
from datasweep.local.checks import check_before_claim
from datasweep.local.experiment_file import ExperimentFileError, load_experiment, parse_prompt_files
from datasweep.local.registry import RegistryError
from datasweep.local.runner import DEFAULT_ROOT, LocalRunner, RunResult, log_tail, parse_worker_command
from datasweep.store.manifest import read_manifest


def experiment_options(func: click.decorators.FC) -> click.decorators.FC:
    func = click.option(
        "--prompt-file",
        "prompt_files",
        multiple=True,
        metavar="[ROLE=]FILE",
        help="prompt text for a prompt given as configMapKeyRef: FILE or generation=FILE, validation=FILE",
    )(func)
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        default=None,
        help="where dataset source paths and model paths are resolved (default: the experiment file's directory)",
    )(func)
    return click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))(func)


@click.command("run")
@experiment_options
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="DATASWEEP_ROOT",
    help=f"local store root (_shared/ and batch_*/ views live here); default: an existing ./{DEFAULT_ROOT} or "
    f"one beside the experiment file (both: refused as ambiguous), else a new ./{DEFAULT_ROOT}",
)
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=1, show_default=True, help="workers at once")
@click.option("--force-regenerate", is_flag=True, help="produce fresh artifacts even where they exist (old kept)")
@click.option(
    "--worker-command",
    default=None,
    metavar="CMD",
    help="command prefix that runs a worker, before `<stage> --spec FILE` (default: this python -m datasweep worker)",
)
def run(
    experiment_file: Path,
    data_dir: Path | None,
    prompt_files: tuple[str, ...],
    root: Path | None,
    jobs: int,
    force_regenerate: bool,
    worker_command: str | None,
) -> None:
    """Run EXPERIMENT_FILE locally: plan, reuse what exists, run the missing stages, build the batch view.

    Exit codes: 0 done, 1 a stage failed (its log is named), 2 bad input, 130 interrupted (rerun resumes).
    """
    console = stderr_console()
    why = "--root" if root is not None else ""
    if root is None:
        root, why = experiment_root(experiment_file)
    console.print(f"store: {root.resolve()} ({why})", markup=False)
    try:
        experiment = load_experiment(experiment_file, data_dir, parse_prompt_files(prompt_files))
        plan = experiment.plan()
        check_before_claim(experiment, plan, root.resolve(), force_regenerate)
        runner = LocalRunner(
            root,
            jobs=jobs,
            worker_command=parse_worker_command(worker_command),
            console=console,
            force_regenerate=force_regenerate,
        )
        result = runner.prepare(experiment, plan)
    except (ExperimentFileError, RegistryError) as exc:
        raise BadInput(str(exc)) from exc
    except OSError as exc:
        raise BadInput(
            f"{root}: cannot write the local store ({exc.strerror or exc}: {exc.filename or root}); "
            f"pass --root DIR naming a writable directory"
        ) from exc
    for note in result.notes:
        console.print(f"note: {note}")
    todo = sum(task.state == "pending" for task in result.tasks)
    if experiment.spec.suspend and todo:
        # A local run has no suspend of its own (Ctrl-C stops it, a rerun resumes): honour the file's, say so.
        console.print(
            f"experiment {experiment.name} has spec.suspend: true: {todo} stage(s) not started; set it to false "
            "(or remove it) to run them. A local run is stopped with Ctrl-C and resumed by rerunning it"
        )
        sys.exit(0)
    console.print(
        f"experiment {experiment.name} -> {plan.batch} under {runner.root}: {result.summary()}; "
        f"{todo} stage(s) to run with --jobs {jobs}"
    )
    result = runner.execute(experiment, result)
    code = report(result, runner.root)
    runner.registry.record_training(
        plan.batch, experiment.name, [t.model_dump(mode="json", by_alias=True) for t in experiment.spec.training]
    )
    objective = experiment.spec.objective
    if objective is not None:
        best = local_best(objective, plan, result)
        runner.registry.record_best(plan.batch, experiment.name, best["artifact"] if best else None)
        if best is None:
            line = f"best: none yet (no done {objective.stage} stage recorded {objective.metric})"
        else:
            line = (
                f"best ({objective.goal} {objective.metric} of {objective.stage}): {best['artifact']} {best['summary']}"
            )
        console.print(line, markup=False, soft_wrap=True)
    sys.exit(code)


def local_best(objective: Objective, plan: Plan, result: RunResult) -> dict[str, Any] | None:
    """status.best of a local run, from the manifests of the objective stage's done stages."""
    done = {task.plan.artifact: task for task in result.tasks if task.state == "done"}
    candidates = []
    for artifact, params in plan.stage_artifacts(objective.stage).items():
        task = done.get(artifact)
        manifest = read_manifest(task.directory) if task is not None else None
        if task is not None and manifest is not None:
            candidates.append(Candidate(artifact, params, recorded_metrics(task.plan.stage, manifest.extra)))
    return best_of(objective.stage, objective.metric, objective.goal, candidates)


def report(result: RunResult, root: Path) -> int:
    console = stderr_console()
    rows = []
    for point in result.points:
        states = ", ".join(f"{task.plan.label}:{'reused' if task.reused else task.state}" for task in point.tasks)
        rows.append(
            (
                point.dataset,
                point.semantic_name,
                "yes" if point.reused else "no",
                states,
                point.generate.relpath,
            )
        )
    print_table(f"{result.batch} ({result.experiment})", ("DATASET", "SEMANTIC", "REUSED", "STAGES", "PATH"), rows)
    # the same data error in every point is printed once, after the last stage that hit it
    tails = {id(task): log_tail(task.log) for task in result.failed}
    last_with = {tail: task for task in result.failed if (tail := tails[id(task)])}
    for task in result.failed:
        console.print(f"[red]FAILED[/red] {task.label}: {task.message}; log: {task.log}")
        tail = tails[id(task)]
        if tail and last_with[tail] is task:
            others = sum(tails[id(t)] == tail for t in result.failed) - 1
            console.print(tail, markup=False)
            if others:
                console.print(f"(the same output ended {others} more failed stage(s) above)")
    for task in result.tasks:
        if task.state == "blocked":
            console.print(f"skipped {task.label}: {task.message}")
    if result.interrupted:
        console.print(f"interrupted: finished stages are kept; rerun the same command to resume ({root})")
        return EXIT_INTERRUPTED
    if result.failed:
        console.print(f"{len(result.failed)} stage(s) failed; fix the cause and rerun to resume")
        return EXIT_FAILED
    console.print(f"done: {result.summary()}; batch view {root / result.batch}")
    return 0


__all__ = ["EXIT_BAD_INPUT", "experiment_options", "run"]
