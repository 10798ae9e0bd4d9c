"""`datasweep results`: one row per point of an experiment or batch with its stage's headline metrics.

The metrics are what each worker wrote in its `manifest.json` (`extra`, `usage`), read from the store: a
local root, or on the cluster the data volume mounted at `--data-root` (without it only the Artifact status:
phase, tokens, cost). `--plot METRIC --axis PARAM` draws the metric across a grid axis as a PNG.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from datasweep.api.worker import DATA_STAGES
from datasweep.cli.backends import ArtifactView, ClusterBackend, LocalBackend
from datasweep.cli.common import BadInput, backend_options, choose_backend, dump, print_table
from datasweep.cli.tools import flatten
from datasweep.store.atomic import atomic_write_bytes
from datasweep.store.manifest import Manifest, read_manifest

STAGE_ORDER = ("generate", "dataset", "fomaml", "moe-steer", "qa")
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

    def flat(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "semanticName": self.semantic_name,
            "stage": self.stage,
            "phase": self.phase,
            **self.axes,
            **self.metrics,
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
        dev = extra.get("dev") or {}
        evaluated = _read_json(directory / "eval_results.json")
        return {
            "em": _num(dev.get("exact")),
            "f1": _num(dev.get("f1")),
            "bestF1": _num(dev.get("best_f1")),
            "threshold": _num(extra.get("null_threshold", evaluated.get("best_f1_thresh"))),
            "bestEpoch": extra.get("best_epoch"),
        }
    if stage == "fomaml":
        before, after = extra.get("mean_before_loss"), extra.get("mean_after_loss")
        return {
            "queryLossBefore": _num(before),
            "queryLossAfter": _num(after),
            "lossDrop": _num(before - after) if isinstance(before, float) and isinstance(after, float) else None,
            "tokenAccuracy": _num(extra.get("mean_after_token_accuracy")),
            "steps": extra.get("total_steps"),
        }
    if stage == "moe-steer":
        # risk_diff.json: every expert ranked by P(routed | unsafe) - P(routed | safe), the selected ones marked
        ranking = _read_json(directory / "risk_diff.json").get("ranking") or []
        chosen = [float(r["risk_diff_mean"]) for r in ranking if r.get("selected") and "risk_diff_mean" in r]
        return {
            "experts": len(extra.get("selectedExperts") or []),
            "riskDiffTop": _num(float(ranking[0]["risk_diff_mean"])) if ranking else None,
            "riskDiffSelectedMean": _num(sum(chosen) / len(chosen)) if chosen else None,
            "riskDiffSelectedMin": _num(min(chosen)) if chosen else None,
            "finalLoss": _num(extra.get("finalLoss")),
            "steps": extra.get("steps"),
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


def _members(backend: LocalBackend | ClusterBackend, target: str) -> tuple[str, list[ArtifactView]]:
    """The data artifacts (generate or dataset) of TARGET (a batch, either spelling, or an experiment), and which."""
    artifacts = backend.artifacts()
    by_name = {a.name: a for a in artifacts}
    batch = backend.batch(target)
    if batch is not None:
        names = [p.artifact for p in batch.points if p.artifact]
        return f"batch {target}", [by_name[n] for n in dict.fromkeys(names) if n in by_name]
    consumed = [a for a in artifacts if a.stage in DATA_STAGES and target in a.consumers]
    if consumed:
        return f"experiment {target}", consumed
    known = sorted(
        {backend.batch_label(b.batch_id) for b in backend.batches()} | {c for a in artifacts for c in a.consumers}
    )
    raise BadInput(f"{target!r} is neither a batch nor an experiment in {backend.location}; known: {', '.join(known)}")


def collect_rows(
    backend: LocalBackend | ClusterBackend, target: str, stage: str | None, data_root: Path | None
) -> tuple[str, str, list[ResultRow]]:
    what, generates = _members(backend, target)
    artifacts = backend.artifacts()
    base = backend.root if isinstance(backend, LocalBackend) else data_root
    chains: list[tuple[ArtifactView, list[ArtifactView]]] = []
    for gen in generates:
        chains.append((gen, [a for a in artifacts if gen.name in a.inputs]))
    present = {a.stage for _, trained in chains for a in trained} | {gen.stage for gen, _ in chains}
    if not present:
        raise BadInput(f"{what} has no points yet")
    if stage is None:
        stage = max(present, key=STAGE_ORDER.index)  # the deepest stage: what the sweep was for
    elif stage not in present:
        raise BadInput(f"--stage {stage}: {what} has no {stage} stage; it has {', '.join(sorted(present))}")
    rows = []
    for gen, trained in chains:
        chosen = [gen] if stage == gen.stage else [a for a in trained if a.stage == stage]
        for artifact in chosen:
            metrics: dict[str, Any] = {}
            manifest = read_manifest(base / artifact.path) if base is not None else None
            if manifest is not None and base is not None:
                metrics = headline_metrics(stage, manifest, base / artifact.path)
            elif artifact.manifest is not None:  # cluster without the volume: the status's usage only
                used = artifact.manifest.usage
                metrics = {"tokens": used.prompt_tokens + used.completion_tokens, "costUsd": used.cost_usd}
            rows.append(
                ResultRow(
                    dataset=gen.dataset,
                    semantic_name=gen.semantic_name,
                    stage=stage,
                    artifact=artifact.name,
                    phase=artifact.phase,
                    axes=_axes(gen.params),
                    metrics=metrics,
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


def plot_metric(rows: list[dict[str, Any]], metric: str, axis: str, title: str, path: Path) -> int:
    """PNG of METRIC against AXIS, one line per dataset (and per other varying axis); returns points drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    others = [a for a in AXES if a != axis and len({str(r.get(a)) for r in rows}) > 1]
    for row in rows:
        x, y = row.get(axis), row.get(metric)
        if not isinstance(x, int | float) or not isinstance(y, int | float):
            continue
        label = " ".join([str(row["dataset"]), *(f"{a}={row.get(a)}" for a in others)])
        series.setdefault(label, []).append((float(x), float(y)))
    drawn = sum(len(points) for points in series.values())
    if not drawn:
        raise BadInput(f"--plot {metric} --axis {axis}: no point has both as numbers (not ready yet?)")
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for label, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)
    ax.set_xlabel(axis)
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return drawn


@click.command("results")
@click.argument("target", metavar="EXPERIMENT|BATCH")
@backend_options
@click.option(
    "-o",
    "--output",
    type=click.Choice(("table", "json", "yaml", "csv")),
    default="table",
    show_default=True,
    help="table for people; json, yaml or csv for scripts and spreadsheets",
)
@click.option("--stage", type=click.Choice(STAGE_ORDER), default=None, help="default: the deepest stage present")
@click.option("--sort", "sort_by", default=None, metavar="COLUMN", help="sort by a column (prefix - for descending)")
@click.option("--plot", "plot", default=None, metavar="METRIC", help="write a PNG of METRIC across --axis")
@click.option("--axis", default="temperature", show_default=True, help="the grid axis of the plot")
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
    axis: str,
    out: Path | None,
    data_root: Path | None,
) -> None:
    """One row per point of an experiment or batch with the stage's headline metrics.

    generate: rows kept/rejected, tokens, cost; qa: EM, F1, best F1 and null threshold; fomaml: query loss
    before/after adaptation; moe-steer: selected experts, final loss, risk-difference summary.
    """
    backend = choose_backend(root, cluster, namespace, kube_context)
    what, stage, found = collect_rows(backend, target, stage, data_root)
    rows = [r.flat() for r in found]
    if isinstance(backend, ClusterBackend) and data_root is None:
        click.echo("note: metrics need the data volume: pass --data-root where it is mounted", err=True)
    if sort_by:
        descending = sort_by.startswith("-")
        column = _column(rows, sort_by.lstrip("-"), "--sort")
        rows.sort(key=_sort_key(column), reverse=descending)
    if plot:
        metric = _column(rows, plot, "--plot")
        axis_column = _column(rows, axis, "--axis")
        path = out or Path(f"{target}-{metric}-vs-{axis_column}.png")
        drawn = plot_metric(rows, metric, axis_column, f"{what}: {stage} {metric}", path)
        click.echo(f"wrote {path} ({drawn} points)", err=True)
    if output == "csv":
        columns = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
    elif output != "table":
        click.echo(dump(rows, output))
    else:
        columns = list(dict.fromkeys(k for row in rows for k in row if k != "artifact"))
        print_table(
            f"{what}: {len(rows)} {stage} results ({backend.location})",
            [c.upper() for c in columns],
            [["" if row.get(c) is None else row.get(c) for c in columns] for row in rows],
        )
