"""`datasweep results`: one row per point of an experiment or batch with its stage's headline metrics.

The metrics are what each worker wrote in its `manifest.json` (`extra`, `usage`), read from the store: a
local root, or on the cluster the data volume mounted at `--data-root` (without it only the Artifact status:
phase, tokens, cost). `--plot METRIC --axis PARAM` draws the metric across a grid axis as a PNG;
`--plot-parallel METRIC` every varying axis at once (parallel coordinates, coloured by the metric); an axis
spanning decades (learning rates) is drawn on a log scale.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from datasweep.api.stage_params import metric_names
from datasweep.api.worker import DATA_STAGES
from datasweep.cli.backends import ArtifactView, ClusterBackend, LocalBackend
from datasweep.cli.common import BadInput, backend_options, choose_backend, dump, print_table
from datasweep.cli.tools import flatten
from datasweep.core.metrics import recorded_metrics
from datasweep.core.stage_names import training_entry_names
from datasweep.k8s import labels as k8s_labels
from datasweep.store.atomic import atomic_write_bytes
from datasweep.store.manifest import Manifest, read_manifest

STAGE_ORDER = ("generate", "dataset", "fomaml", "moe-steer", "qa")
# row columns that are never an axis of the sweep
_NOT_AXES = ("semanticName", "phase", "artifact", "best", "leftGrid")
# the grid axes shown beside the metrics (the generate parameters a sweep varies)
AXES = ("model", "temperature", "top_p", "max_tokens", "frequency_penalty", "presence_penalty")


@dataclass
class ResultRow:
    dataset: str
    semantic_name: str
    stage: str
    artifact: str
    phase: str
    axes: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    best: bool = False  # status.best of the Experiment (its spec.objective)
    left_grid: bool = False  # a row the experiment consumed that its current plan no longer has (shown by --all)

    def flat(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "semanticName": self.semantic_name,
            "stage": self.stage,
            "phase": self.phase,
            **self.axes,
            **self.metrics,
            **({"best": True} if self.best else {}),
            **({"leftGrid": True} if self.left_grid else {}),
            "artifact": self.artifact,
        }


def _num(value: Any, digits: int = 4) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def headline_metrics(stage: str, manifest: Manifest, directory: Path) -> dict[str, Any]:
    """The numbers a researcher compares, from what the stage's worker wrote (manifest `extra`, its files)."""
    extra = manifest.extra
    usage = manifest.usage
    if stage == "generate":
        counts = extra.get("counts") or {}
        return {
            "kept": sum(int(c.get("kept", 0)) for c in counts.values()),
            "rejected": sum(int(c.get("rejected", 0)) for c in counts.values()),
            "tokens": usage.prompt_tokens + usage.completion_tokens,
            "costUsd": _num(usage.cost_usd, 6),
        }
    if stage == "dataset":  # a prepared dataset: what was snapshotted
        return {"rows": manifest.rows, "files": len(manifest.files)}
    if stage == "qa":
        recorded = recorded_metrics(stage, extra)
        evaluated = _read_json(directory / "eval_results.json")
        return {
            "em": _num(recorded.get("em")),
            "f1": _num(recorded.get("f1")),
            "bestF1": _num(recorded.get("bestF1")),
            "threshold": _num(recorded.get("threshold", evaluated.get("best_f1_thresh"))),
            "bestEpoch": recorded.get("bestEpoch"),
        }
    if stage == "fomaml":
        recorded = recorded_metrics(stage, extra)
        return {name: _num(recorded.get(name)) for name in metric_names(stage)}
    if stage == "moe-steer":
        # risk_diff.json: every expert ranked by P(routed | unsafe) - P(routed | safe), the selected ones marked
        recorded = recorded_metrics(stage, extra)
        ranking = _read_json(directory / "risk_diff.json").get("ranking") or []
        chosen = [float(r["risk_diff_mean"]) for r in ranking if r.get("selected") and "risk_diff_mean" in r]
        return {
            "experts": recorded.get("experts"),
            "riskDiffTop": _num(float(ranking[0]["risk_diff_mean"])) if ranking else None,
            "riskDiffSelectedMean": _num(sum(chosen) / len(chosen)) if chosen else None,
            "riskDiffSelectedMin": _num(min(chosen)) if chosen else None,
            "finalLoss": _num(recorded.get("finalLoss")),
            "steps": recorded.get("steps"),
        }
    return {}


def _axes(params: dict[str, Any]) -> dict[str, Any]:
    flat = flatten(params)
    found: dict[str, Any] = {}
    for axis in AXES:
        for key, value in flat.items():
            if key.split(".")[-1] == axis and "validation" not in key.split("."):
                found[axis] = value
                break
    return found


def _effective_params(artifact: ArtifactView) -> dict[str, Any]:
    """A training Artifact's parameters (local records keep the fingerprinted form: `params` inside)."""
    params = artifact.params
    if isinstance(params.get("params"), dict) and "stage" in params:
        params = params["params"]
    return params


def _training_values(artifact: ArtifactView) -> dict[str, Any]:
    """A training Artifact's scalar parameters."""
    return {key: value for key, value in _effective_params(artifact).items() if not isinstance(value, dict | list)}


def _stage_label(artifact: ArtifactView, experiments: list[str], training_of: Callable[[str], Any]) -> str:
    """The STAGE of a row: the names of the training entries of its experiment(s) that plan this Artifact
    (joined with |), else its kind (a data stage, or no entry matches)."""
    if artifact.stage in DATA_STAGES:
        return artifact.stage
    params = _effective_params(artifact)
    names = dict.fromkeys(
        name
        for experiment in experiments
        for name in training_entry_names(training_of(experiment), artifact.stage, artifact.base_model, params)
    )
    return "|".join(names) or artifact.stage


def _order(values: dict[str, Any]) -> tuple[tuple[int, Any], ...]:
    """Rows of one point in the order of their values (numbers as numbers)."""
    return tuple(
        (0, v) if isinstance(v, int | float) and not isinstance(v, bool) else (1, str(v)) for v in values.values()
    )


def varying_columns(rows: list[dict[str, Any]], columns: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Of `columns`, those whose value differs between rows, and the constant ones with their one value."""
    varying, constant = [], {}
    for column in columns:
        values = {json.dumps(row.get(column), sort_keys=True, default=str) for row in rows}
        if len(values) > 1:
            varying.append(column)
        elif rows:
            constant[column] = rows[0].get(column)
    return varying, constant


@dataclass(frozen=True)
class Consumption:
    """Of an experiment: the Artifacts its current plan consumes, and those it consumed before that its plan no
    longer has (its grid shrank: a value, a stage combination or a spec.search sample left it)."""

    current: frozenset[str]
    left: frozenset[str]


def consumption(backend: LocalBackend | ClusterBackend, experiment: str, artifacts: list[ArtifactView]) -> Consumption:
    consumed = frozenset(a.name for a in artifacts if experiment in a.consumers)
    if isinstance(backend, ClusterBackend):  # the operator keeps the labels to the plan (controller/consumption.py)
        key = k8s_labels.left_key(experiment)
        return Consumption(consumed, frozenset(a.name for a in artifacts if key in a.label_keys) - consumed)
    # locally a record keeps every run's consumers; the batch records hold what the last run planned
    points = [p for b in backend.registry.batches() for p in b.points if p.experiment == experiment]
    if not points:
        return Consumption(consumed, frozenset())
    planned = {p.artifact for p in points} | {t for p in points for t in p.training or ()}
    unlisted = {p.artifact for p in points if p.training is None}  # recorded before its training Artifacts were
    current = frozenset(
        a.name for a in artifacts if a.name in consumed and (a.name in planned or set(a.inputs[:1]) & unlisted)
    )
    return Consumption(current, consumed - current)


def _members(
    backend: LocalBackend | ClusterBackend, target: str, artifacts: list[ArtifactView], everything: bool
) -> tuple[str, list[ArtifactView], Consumption | None]:
    """The data artifacts (generate or dataset) of TARGET (a batch, either spelling, or an experiment), which it
    is, and for an experiment what it consumes (`everything`: its points that left its grid too)."""
    by_name = {a.name: a for a in artifacts}
    batch = backend.batch(target)
    if batch is not None:
        names = [p.artifact for p in batch.points if p.artifact]
        return f"batch {target}", [by_name[n] for n in dict.fromkeys(names) if n in by_name], None
    consumed = consumption(backend, target, artifacts)
    shown = consumed.current | consumed.left if everything else consumed.current
    if consumed.current or consumed.left:
        return f"experiment {target}", [a for a in artifacts if a.stage in DATA_STAGES and a.name in shown], consumed
    known = sorted(
        {backend.batch_label(b.batch_id) for b in backend.batches()} | {c for a in artifacts for c in a.consumers}
    )
    raise BadInput(f"{target!r} is neither a batch nor an experiment in {backend.location}; known: {', '.join(known)}")


def collect_rows(
    backend: LocalBackend | ClusterBackend,
    target: str,
    stage: str | None,
    data_root: Path | None,
    everything: bool = False,
) -> tuple[str, str, list[ResultRow]]:
    """Rows of TARGET's `stage`: for an experiment only the Artifacts its current plan consumes (`everything`:
    all of them on its points, whichever experiment made them, and those its grid no longer has, marked); one
    row per training Artifact (point x stage combination)."""
    artifacts = backend.artifacts()
    what, generates, consumed = _members(backend, target, artifacts, everything)
    base = backend.root if isinstance(backend, LocalBackend) else data_root
    experiment = target if consumed is not None else None
    if experiment is None:
        best = None
    elif isinstance(backend, ClusterBackend):
        best = backend.experiment_best(experiment)
    else:  # what `datasweep run` recorded after the experiment's last run
        best = next((b.best[experiment] for b in backend.registry.batches() if experiment in b.best), None)
    left = consumed.left if consumed is not None else frozenset()
    if experiment is not None and consumed is not None and isinstance(backend, ClusterBackend):
        planned = backend.experiment_planned(experiment)
        if planned is not None and planned[1] != k8s_labels.plan_digest(consumed.current):
            click.echo(
                f"note: the Artifacts labelled as consumed by {experiment} ({len(consumed.current)}) are not its "
                f"current plan ({planned[0]}) yet: the operator has not applied its last change (is it running?)",
                err=True,
            )
    batch = backend.batch(target) if experiment is None else None
    batch_experiments = batch.experiments if batch is not None else []
    training_of = functools.cache(backend.experiment_training)
    chains: list[tuple[ArtifactView, list[ArtifactView]]] = []
    for gen in generates:
        trained = [a for a in artifacts if gen.name in a.inputs]
        if consumed is not None and not everything:
            trained = [a for a in trained if a.name in consumed.current]
        chains.append((gen, trained))
    present = {a.stage for _, trained in chains for a in trained} | {gen.stage for gen, _ in chains}
    if not present:
        hint = "; `--all` shows those its grid no longer has" if left and not everything else ""
        raise BadInput(f"{what} has no points yet{hint}")
    if stage is None:
        stage = max(present, key=STAGE_ORDER.index)  # the deepest stage: what the sweep was for
    elif stage not in present:
        raise BadInput(f"--stage {stage}: {what} has no {stage} stage; it has {', '.join(sorted(present))}")
    rows = []
    for gen, trained in chains:
        chosen = [gen] if stage == gen.stage else [a for a in trained if a.stage == stage]
        chosen.sort(key=lambda a: _order(_training_values(a)))
        for artifact in chosen:
            metrics: dict[str, Any] = {}
            manifest = read_manifest(base / artifact.path) if base is not None else None
            if manifest is not None and base is not None:
                metrics = headline_metrics(stage, manifest, base / artifact.path)
            elif artifact.manifest is not None:  # cluster without the volume: what the status records
                used = artifact.manifest.usage
                metrics = dict(artifact.manifest.metrics) if stage not in DATA_STAGES else {}
                metrics.update(tokens=used.prompt_tokens + used.completion_tokens, costUsd=used.cost_usd)
            rows.append(
                ResultRow(
                    dataset=gen.dataset,
                    semantic_name=gen.semantic_name,
                    stage=_stage_label(
                        artifact,
                        [experiment] if experiment else [c for c in artifact.consumers if c in batch_experiments],
                        training_of,
                    ),
                    artifact=artifact.name,
                    phase=artifact.phase,
                    axes={**_axes(gen.params), **(_training_values(artifact) if artifact is not gen else {})},
                    metrics=metrics,
                    best=best is not None and best == artifact.name,
                    left_grid=gen.name in left or artifact.name in left,
                )
            )
    return what, stage, rows


def _sort_key(column: str) -> Any:
    def key(row: dict[str, Any]) -> tuple[int, Any]:
        value = row.get(column)
        if value is None:
            return (1, 0)
        return (0, value if isinstance(value, int | float) else str(value))

    return key


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


def _column(rows: list[dict[str, Any]], name: str, option: str) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for candidate in (name, _camel(name), name.replace("-", "_")):
        if candidate in columns:
            return candidate
    lowered = {c.lower(): c for c in columns}
    if name.lower() in lowered:
        return lowered[name.lower()]
    raise BadInput(f"{option} {name}: no such column; columns: {', '.join(columns)}")


def plot_metric(
    rows: list[dict[str, Any]],
    metric: str,
    axis: str,
    title: str,
    path: Path,
    by: str | None = None,
    metrics: frozenset[str] = frozenset(),
    log: tuple[str, ...] = (),
    linear: tuple[str, ...] = (),
) -> int:
    """PNG of METRIC against AXIS, one line per value of BY and of every other varying axis (dataset included);
    returns the points drawn. A constant AXIS or BY is refused: one value draws no trend."""
    fig, drawn = metric_figure(rows, metric, axis, title, by, metrics, log, linear)
    _write_png(fig, path)
    return drawn


def metric_figure(
    rows: list[dict[str, Any]],
    metric: str,
    axis: str,
    title: str,
    by: str | None = None,
    metrics: frozenset[str] = frozenset(),
    log: tuple[str, ...] = (),
    linear: tuple[str, ...] = (),
) -> tuple[Any, int]:
    """The figure of `plot_metric` and the points it draws (x on a log scale per `log_scaled`)."""
    plt = _pyplot()
    varying, constant = _plot_axes(rows, metric, metrics)
    for option, column in (("--axis", axis), ("--by", by)):
        if column is not None and column not in varying:
            raise BadInput(
                f"{option} {column}: every row has {column}={constant.get(column)!r}, a constant; the axes that "
                f"vary here: {', '.join(varying) or 'none'}"
            )
    logs = log_scaled(rows, [axis], metric, log, linear)
    series: dict[str, list[tuple[float, float]]] = {}
    # one line per value of BY, split further by any other axis that varies: a line never joins two configurations
    first = [by] if by is not None else []
    others = [*first, "dataset", *(a for a in varying if a not in (axis, by, "dataset"))]
    for row in rows:
        x, y = row.get(axis), row.get(metric)
        if not isinstance(x, int | float) or not isinstance(y, int | float):
            continue
        label = " ".join(f"{a}={row.get(a)}" for a in others if a in varying) or str(row.get("dataset"))
        series.setdefault(label, []).append((float(x), float(y)))
    drawn = sum(len(points) for points in series.values())
    if not drawn:
        raise BadInput(f"--plot {metric} --axis {axis}: no point has both as numbers (not ready yet?)")
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for label, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)
    if axis in logs:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        distinct = sorted({x for points in series.values() for x, _ in points})
        if len(distinct) <= 8:  # the swept values themselves, not only the powers of ten
            ax.set_xticks(distinct, labels=[f"{v:g}" for v in distinct])
            ax.xaxis.set_minor_formatter(NullFormatter())
    if metric in logs:
        ax.set_yscale("log")
    ax.set_xlabel(_scale_label(axis, logs))
    ax.set_ylabel(_scale_label(metric, logs))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig, drawn


# a numeric axis whose values (all above 0) span this many powers of ten is drawn on a log scale unless --linear
LOG_DECADES = 2.0


def log_scaled(
    rows: list[dict[str, Any]], axes: list[str], metric: str, log: tuple[str, ...], linear: tuple[str, ...]
) -> frozenset[str]:
    """Which of a plot's AXES and METRIC are drawn on a log scale: those `--log` names, and each axis whose
    values span LOG_DECADES or more unless `--linear` names it (the metric only when asked). `--log` on a
    column with a value <= 0 or not a number is refused, naming the value."""
    drawn = [*axes, metric]
    for option, names in (("--log", log), ("--linear", linear)):
        for name in names:
            if name not in drawn:
                raise BadInput(f"{option} {name}: not drawn on an axis of this plot; its axes: {', '.join(drawn)}")
    both = sorted(set(log) & set(linear))
    if both:
        raise BadInput(f"--log {both[0]} and --linear {both[0]}: give one of them")
    for name in log:
        for value in (row.get(name) for row in rows):
            if value is None:  # not measured yet
                continue
            if not _is_number(value):
                raise BadInput(f"--log {name}: {name}={value!r} is not a number; a log scale needs numbers above 0")
            if value <= 0:
                raise BadInput(f"--log {name}: {name}={value!r}; a log scale needs every value above 0")
    automatic = {name for name in axes if name not in linear and _spans_decades(row.get(name) for row in rows)}
    return frozenset(log) | automatic


def _spans_decades(values: Iterable[Any]) -> bool:
    found = [v for v in values if v is not None]
    if not found or not all(_is_number(v) and v > 0 for v in found):
        return False
    return bool(math.log10(max(found) / min(found)) >= LOG_DECADES)


def _scale_label(name: str, logs: frozenset[str]) -> str:
    return f"{name} (log)" if name in logs else name


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _write_png(fig: Any, path: Path) -> None:
    """The one way a plot reaches its file: rendered in memory, then written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _plot_axes(rows: list[dict[str, Any]], metric: str, metrics: frozenset[str]) -> tuple[list[str], dict[str, Any]]:
    """The sweep's axes (not the metric, not other metrics): those that vary, and the constant ones."""
    columns = dict.fromkeys(k for row in rows for k in row)
    return varying_columns(rows, [c for c in columns if c not in _NOT_AXES and c != metric and c not in metrics])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parallel_positions(values: list[Any], log: bool = False) -> tuple[list[float], list[tuple[float, str]]]:
    """Each value's height on its axis (0..1) and the axis's ticks: numbers linearly (`log`: their logarithms),
    anything else (a model name, a dataset) as categories evenly spaced in sorted order."""
    if all(_is_number(v) for v in values):
        scale: Callable[[float], float] = math.log10 if log else float
        low, high = min(values), max(values)
        span = (scale(high) - scale(low)) or 1.0
        distinct = sorted(set(values))
        if len(distinct) <= 8:
            shown = distinct
        elif log:  # the powers of ten between the ends, and the ends
            decades = range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)
            shown = sorted({low, high, *(10.0**d for d in decades)})
        else:
            shown = [low + (high - low) * i / 4 for i in range(5)]

        def height(v: float) -> float:
            return (scale(v) - scale(low)) / span

        return [height(v) for v in values], [(height(v), f"{v:g}") for v in shown]
    labels = sorted({str(v) for v in values})
    step = max(len(labels) - 1, 1)
    where = {label: i / step for i, label in enumerate(labels)}
    return [where[str(v)] for v in values], [(where[label], label) for label in labels]


def plot_parallel(
    rows: list[dict[str, Any]],
    metric: str,
    title: str,
    path: Path,
    metrics: frozenset[str],
    log: tuple[str, ...] = (),
    linear: tuple[str, ...] = (),
) -> int:
    """Parallel-coordinates PNG: one vertical axis per varying axis of the sweep and one for METRIC, each row a
    line coloured by METRIC (the best row thicker); returns the rows drawn. Fewer than 2 varying axes is refused."""
    fig, drawn = parallel_figure(rows, metric, title, metrics, log, linear)
    _write_png(fig, path)
    return drawn


def parallel_figure(
    rows: list[dict[str, Any]],
    metric: str,
    title: str,
    metrics: frozenset[str],
    log: tuple[str, ...] = (),
    linear: tuple[str, ...] = (),
) -> tuple[Any, int]:
    """The figure of `plot_parallel` and the rows it draws (axes on a log scale per `log_scaled`)."""
    varying, _ = _plot_axes(rows, metric, metrics)
    if len(varying) < 2:
        hint = f"; use --plot {metric} --axis {varying[0]}" if varying else ""
        raise BadInput(
            f"--plot-parallel {metric}: needs at least 2 axes that vary; here {', '.join(varying) or 'none'} "
            f"{'varies' if len(varying) == 1 else 'vary'}{hint}"
        )
    drawn = [row for row in rows if _is_number(row.get(metric))]
    if not drawn:
        raise BadInput(f"--plot-parallel {metric}: no row has it as a number (not ready yet?)")
    logs = log_scaled(rows, varying, metric, log, linear)
    names = [*varying, metric]
    placed = [_parallel_positions([row.get(name) for row in drawn], name in logs) for name in names]
    plt = _pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize

    scores = [float(row[metric]) for row in drawn]
    low, high = min(scores), max(scores)
    if metric in logs:
        norm: Normalize = LogNorm(low, high if high > low else low * 10)
    else:
        norm = Normalize(low, high if high > low else low + 1)
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(names)), 4.5), constrained_layout=True)
    xs = list(range(len(names)))
    for i, (row, score) in enumerate(zip(drawn, scores, strict=True)):
        heights = [positions[i] for positions, _ in placed]
        ax.plot(xs, heights, "-o", color=cmap(norm(score)), lw=3.0 if row.get("best") else 1.4, ms=3, alpha=0.85)
    for x, (_, ticks) in zip(xs, placed, strict=True):
        ax.axvline(x, color="black", lw=0.8)
        for height, label in ticks:
            ax.text(x + 0.04, height, label, fontsize=7, va="center")
    ax.set_xticks(xs, labels=[_scale_label(name, logs) for name in names])
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(names) - 0.5)
    ax.set_ylim(-0.06, 1.06)
    ax.set_title(title)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=_scale_label(metric, logs))
    return fig, len(drawn)


@click.command("results")
@click.argument("target", metavar="EXPERIMENT|BATCH")
@backend_options
@click.option(
    "-o",
    "--output",
    type=click.Choice(("table", "wide", "json", "yaml", "csv")),
    default="table",
    show_default=True,
    help="table for people (wide: every constant in full), json, yaml or csv for scripts and spreadsheets",
)
@click.option("--stage", type=click.Choice(STAGE_ORDER), default=None, help="default: the deepest stage present")
@click.option("--sort", "sort_by", default=None, metavar="COLUMN", help="sort by a column (prefix - for descending)")
@click.option("--plot", "plot", default=None, metavar="METRIC", help="write a PNG of METRIC across --axis")
@click.option(
    "--plot-parallel",
    "plot_parallel_metric",
    default=None,
    metavar="METRIC",
    help="write a parallel-coordinates PNG: every varying axis, lines coloured by METRIC",
)
@click.option("--axis", default="temperature", show_default=True, help="the grid axis of the plot")
@click.option("--by", "by", default=None, metavar="AXIS", help="one line per value of this second axis")
@click.option(
    "--log",
    "log_axes",
    multiple=True,
    metavar="AXIS",
    help="draw AXIS (or the metric) of the plot on a log scale (repeatable; automatic for numbers spanning 2 decades)",
)
@click.option(
    "--linear", "linear_axes", multiple=True, metavar="AXIS", help="draw AXIS on a linear scale, never log (repeatable)"
)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="an experiment's training results made by other experiments on its points too, and the rows its grid "
    "no longer has (marked: left the grid)",
)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PNG path")
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="cluster backend: where the data volume is mounted here (for the metrics in the manifests)",
)
def results(
    target: str,
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    output: str,
    stage: str | None,
    sort_by: str | None,
    plot: str | None,
    plot_parallel_metric: str | None,
    axis: str,
    by: str | None,
    log_axes: tuple[str, ...],
    linear_axes: tuple[str, ...],
    everything: bool,
    out: Path | None,
    data_root: Path | None,
) -> None:
    """One row per point of an experiment or batch with the stage's headline metrics.

    generate: rows kept/rejected, tokens, cost; qa: EM, F1, best F1 and null threshold; fomaml: query loss
    before/after adaptation; moe-steer: selected experts, final loss, risk-difference summary.
    """
    backend = choose_backend(root, cluster, namespace, kube_context)
    what, stage, found = collect_rows(backend, target, stage, data_root, everything)
    rows = [r.flat() for r in found]
    if isinstance(backend, ClusterBackend) and data_root is None:
        click.echo("note: metrics need the data volume: pass --data-root where it is mounted", err=True)
    if sort_by:
        descending = sort_by.startswith("-")
        column = _column(rows, sort_by.lstrip("-"), "--sort")
        rows.sort(key=_sort_key(column), reverse=descending)
    log_axes, linear_axes = _scale_options(rows, log_axes, linear_axes, bool(plot or plot_parallel_metric))
    if plot:
        metric = _column(rows, plot, "--plot")
        axis_column = _column(rows, axis, "--axis")
        by_column = _column(rows, by, "--by") if by else None
        path = out or Path(f"{target}-{metric}-vs-{axis_column}.png")
        measured = frozenset(k for r in found for k in r.metrics)
        drawn = plot_metric(
            rows, metric, axis_column, f"{what}: {stage} {metric}", path, by_column, measured, log_axes, linear_axes
        )
        click.echo(f"wrote {path} ({drawn} points)", err=True)
    if plot_parallel_metric:
        if plot:
            raise BadInput("--plot and --plot-parallel: give one at a time (each writes its own PNG)")
        measured = frozenset(k for r in found for k in r.metrics)
        known = [dict.fromkeys(sorted(measured))]
        try:
            metric = _column(known, plot_parallel_metric, "--plot-parallel")
        except BadInput:
            metric = ""
        if metric not in measured:
            raise BadInput(
                f"--plot-parallel {plot_parallel_metric}: not a metric of the {stage} rows; their metrics: "
                f"{', '.join(sorted(measured)) or 'none yet'}"
            )
        path = out or Path(f"{target}-{metric}-parallel.png")
        drawn = plot_parallel(rows, metric, f"{what}: {stage} {metric}", path, measured, log_axes, linear_axes)
        click.echo(f"wrote {path} ({drawn} rows)", err=True)
    if output == "csv":
        columns = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
    elif output not in ("table", "wide"):
        click.echo(dump(rows, output))
    else:
        columns = list(dict.fromkeys(k for row in rows for k in row if k != "artifact"))
        # the axes no row differs in are one header line, not a column each
        axes = [c for c in columns if c not in _NOT_AXES and not any(c in r.metrics for r in found)]
        constant = varying_columns(rows, axes)[1]
        columns = [c for c in columns if c not in constant or c in ("dataset", "stage")]
        if any(r.best for r in found):
            columns = ["best", *(c for c in columns if c != "best")]
        if any(r.left_grid for r in found):
            columns = [*(c for c in columns if c != "leftGrid"), "leftGrid"]
        shared = {k: v for k, v in constant.items() if k not in ("dataset", "stage")}
        if shared:
            labels = sorted({str(row.get("stage")) for row in rows})
            width = shutil.get_terminal_size((HEADER_WIDTH, 24)).columns  # COLUMNS, the terminal, else 100
            click.echo("\n".join(constants_header(shared, stage, labels, width, wide=output == "wide")))
        print_table(
            f"{what}: {len(rows)} {stage} results ({backend.location})",
            [c.upper() for c in columns],
            [[_cell(row, c) for c in columns] for row in rows],
        )


# the header of the constant axes: at most this many lines a group, this many characters a value (-o wide: all)
HEADER_LINES = 3
HEADER_WIDTH = 100  # piped, without COLUMNS
HEADER_VALUE_CHARS = 40


def constants_header(constant: dict[str, Any], stage: str, labels: list[str], width: int, wide: bool) -> list[str]:
    """The axes every row shares, above the table: the generation settings, then the training stage's (named
    by its entries, `labels`), each group wrapped at `width`; unless `wide`, long values and long groups are
    shortened and say how many more `-o wide` shows."""
    generation = {k: v for k, v in constant.items() if k in AXES}
    training = {k: v for k, v in constant.items() if k not in AXES}
    named = ", ".join(label for label in labels if label != stage)
    groups = [("generation", generation), (f"{named} ({stage})" if named else stage, training)]
    lines = ["the same in every row:"]
    for label, values in groups:
        items = [f"{k}={_header_value(v, wide)}" for k, v in values.items()]
        if items:
            lines += _wrap_group(label, items, width, None if wide else HEADER_LINES)
    return lines


def _header_value(value: Any, wide: bool) -> str:
    text = json.dumps(value) if isinstance(value, str) and (not value or value != value.strip()) else str(value)
    if wide or len(text) <= HEADER_VALUE_CHARS:
        return text
    return text[: HEADER_VALUE_CHARS - 1] + "…"


def _wrap_group(label: str, items: list[str], width: int, max_lines: int | None) -> list[str]:
    """`  label: a=1, b=2,` wrapped at `width` (continuation lines indented); past `max_lines` the last line
    says how many items are left out."""

    def wrap(parts: list[str]) -> list[str]:
        lines, line = [], f"  {label}:"
        for n, part in enumerate(parts):
            text = part + ("," if n < len(parts) - 1 else "")
            if n and len(line) + 1 + len(text) > width:
                lines.append(line)
                line = "   "
            line += " " + text
        return [*lines, line]

    kept = len(items)
    lines = wrap(items)
    while max_lines is not None and len(lines) > max_lines and kept > 1:
        kept -= 1
        lines = wrap([*items[:kept], f"… {len(items) - kept} more (-o wide shows all)"])
    return lines


def _scale_options(
    rows: list[dict[str, Any]], log: tuple[str, ...], linear: tuple[str, ...], plotting: bool
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`--log` and `--linear` as the rows' column names; they shape a plot, so they need one."""
    if (log or linear) and not plotting:
        raise BadInput(f"{'--log' if log else '--linear'}: sets the scale of a plot; add --plot or --plot-parallel")
    return tuple(_column(rows, n, "--log") for n in log), tuple(_column(rows, n, "--linear") for n in linear)


def _cell(row: dict[str, Any], column: str) -> Any:
    value = row.get(column)
    if column == "best":
        return "*" if value else ""
    if column == "leftGrid":
        return "left the grid" if value else ""
    return "" if value is None else value
