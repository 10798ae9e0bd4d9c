"""The seed 000 batch tools (SPEC section 8), on a local root or on the cluster."""

from __future__ import annotations

import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import click

from datasweep.cli.backends import ArtifactView, BatchView, ClusterBackend, LocalBackend
from datasweep.cli.common import (
    BadInput,
    Failed,
    backend_options,
    choose_backend,
    dump,
    output_option,
    print_table,
    wide_requested,
)
from datasweep.store.layout import SHARED
from datasweep.store.provenance import Provenance

Backend = LocalBackend | ClusterBackend
HEX = re.compile(r"^[0-9a-f]{6,64}$")


def _backend(root: Path | None, cluster: bool, namespace: str | None, kube_context: str | None) -> Backend:
    backend: Backend = choose_backend(root, cluster, namespace, kube_context)
    return backend


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


# ---- finding things by what people type ----


def split_store_path(text: str) -> tuple[str | None, str | None, str | None, str]:
    """`…/batch_x/Copa/temp07/Copa` -> (batch_x, Copa, temp07, "Copa"); `…/_shared/Copa/temp07` -> (None, …)."""
    parts = PurePosixPath(text.strip().rstrip("/")).parts
    for index, part in enumerate(parts):
        if (part == SHARED or part.startswith("batch_")) and len(parts) >= index + 3:
            batch = None if part == SHARED else part
            rest = "/".join(parts[index + 3 :])
            return batch, parts[index + 1], parts[index + 2], rest
    if len(parts) == 2:
        return None, parts[0], parts[1], ""
    return None, None, None, ""


def find_artifacts(artifacts: list[ArtifactView], ident: str) -> list[ArtifactView]:
    """Artifact name, fingerprint prefix, Dataset/semantic, a shared or batch path, or a bare semantic name."""
    exact = [a for a in artifacts if a.name == ident]
    if exact:
        return exact
    lowered = ident.lower()
    if HEX.match(lowered):
        by_fp = [
            a
            for a in artifacts
            if a.fingerprint.startswith(lowered) or (a.legacy_fingerprint or "").lower().startswith(lowered)
        ]
        if by_fp:
            return by_fp
    _, dataset, name, rest = split_store_path(ident)
    if dataset and name:
        shared = f"{SHARED}/{dataset}/{name}"
        candidates = [a for a in artifacts if a.path == shared]
        if rest.startswith("train/"):
            nested = f"{shared}/{'/'.join(rest.split('/')[:2])}"
            candidates = [a for a in artifacts if a.path == nested] or candidates
        return candidates
    return [a for a in artifacts if a.semantic_name == ident or PurePosixPath(a.path).name == ident]


def one_artifact(artifacts: list[ArtifactView], ident: str) -> ArtifactView:
    """The artifact `ident` names; among several matches a single Ready one wins (a failed claim beside
    its fixed rerun is not what anyone means), with a note naming the others."""
    found = find_artifacts(artifacts, ident)
    if not found:
        raise BadInput(f"no artifact matches {ident!r}; list them with `datasweep artifacts`")
    ready = [a for a in found if a.ready]
    if len(found) > 1 and len(ready) == 1:
        others = ", ".join(f"{a.name} ({a.phase})" for a in found if not a.ready)
        click.echo(f"note: {ident!r} also matches {others}; using the Ready {ready[0].name}", err=True)
        return ready[0]
    if len(found) > 1:
        names = "\n  ".join(f"{a.name}  ({a.stage}, {a.path})" for a in found)
        raise BadInput(f"{ident!r} is ambiguous, it matches {len(found)} artifacts:\n  {names}\nname one of them")
    return found[0]


def one_batch(backend: Backend, batch_id: str) -> BatchView:
    """The batch BATCH names, spelled as its id (batch_x_y) or as its object name (batch-x-y, what kubectl shows)."""
    batch = backend.batch(batch_id)
    if batch is None:
        known = ", ".join(backend.batch_label(b.batch_id) for b in backend.batches()) or "none"
        raise BadInput(f"unknown batch {batch_id!r} in {backend.location}; known batches: {known}")
    return batch


# ---- batches / batch ----


@click.command("batches")
@backend_options
@output_option
@click.option("-v", "--verbose", is_flag=True, help="also the datasets of each batch")
def batches(
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    output: str,
    verbose: bool,
) -> None:
    """List batches (was batch_tools/list_batches.py); `-o wide` adds the datasets, `-o name` prints the names.

    On a cluster BATCH is the Batch object's name (`kubectl get bat NAME` finds it) and the counts are the ones
    `kubectl get batches` prints; READY counts points whose every stage is Ready. Every command takes either
    spelling of a batch (batch-20241229-x or batch_20241229_x)."""
    backend = _backend(root, cluster, namespace, kube_context)
    verbose = verbose or wide_requested()
    found = backend.batches()
    if output != "table":
        click.echo(dump([b.to_dict(verbose=verbose) for b in found], output))
        return
    rows = []
    for b in found:
        datasets = ", ".join(f"{d}: {sum(p.dataset == d for p in b.points)}" for d in b.datasets)
        counts = b.counts
        row: list[Any] = [backend.batch_label(b.batch_id), b.purpose, counts["experiments"], counts["points"]]
        row += [counts["reused"], counts["ready"]]
        rows.append([*row, datasets] if verbose else row)
    columns = ["BATCH", "PURPOSE", "EXPERIMENTS", "POINTS", "REUSED", "READY"] + (["DATASETS"] if verbose else [])
    print_table(f"{len(found)} batches ({backend.location})", columns, rows, name_column="BATCH")


@click.command("batch")
@click.argument("batch_id")
@backend_options
@output_option
@click.option("-v", "--verbose", is_flag=True, help="also experiments, artifacts and paths")
def batch(
    batch_id: str,
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    output: str,
    verbose: bool,
) -> None:
    """The points of BATCH_ID: reused or new, where reused data came from, and whether every stage is Ready.

    Was batch_tools/list_batch_experiments.py; `-o wide` adds experiment, artifact and path. BATCH_ID in either
    spelling: batch_20241229_x or the object name batch-20241229-x.
    """
    backend = _backend(root, cluster, namespace, kube_context)
    verbose = verbose or wide_requested()
    view = one_batch(backend, batch_id)
    if output != "table":
        click.echo(dump(view.to_dict(verbose=True), output))
        return
    rows = []
    for p in view.points:
        first = backend.batch_label(p.first_batch) if p.first_batch else "?"
        reused = f"yes (first batch: {first})" if p.reused else "no (new)"
        row = [f"{p.dataset}/{p.name}", reused, _yes_no(p.done)]
        if verbose:
            row += [p.experiment or "", p.artifact or "", p.shared_path or ""]
        rows.append(row)
    columns = ["POINT", "REUSED", "READY"] + (["EXPERIMENT", "ARTIFACT", "SHARED PATH"] if verbose else [])
    print_table(
        f"{backend.batch_label(view.batch_id)}: {len(view.points)} points "
        f"({', '.join(view.experiments) or 'no experiments recorded'})",
        columns,
        rows,
        name_column="POINT",
    )
    for p in view.points:
        if p.broken:
            click.echo(f"warning: {p.path}: {p.broken}", err=True)


# ---- artifacts / compare ----


@click.command("artifacts")
@backend_options
@output_option
@click.option("--dataset", default=None, help="only this dataset")
@click.option("--stage", default=None, help="only this stage kind (generate, fomaml, moe-steer, qa)")
def artifacts(
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    output: str,
    dataset: str | None,
    stage: str | None,
) -> None:
    """Physical data, one row per artifact: first batch and consumers (was batch_tools/list_shared_experiments.py)."""
    backend = _backend(root, cluster, namespace, kube_context)
    found = [
        a
        for a in backend.artifacts()
        if (dataset is None or a.dataset == dataset) and (stage is None or a.stage == stage)
    ]
    if dataset is not None and not found and output == "table":
        known = sorted({a.dataset for a in backend.artifacts()})
        click.echo(f"no artifacts for dataset {dataset!r}; datasets here: {', '.join(known) or 'none'}", err=True)
    if output != "table":
        click.echo(dump([a.to_dict() for a in found], output))
        return
    wide = wide_requested()
    rows = [
        (
            a.dataset,
            a.semantic_name,
            a.stage,
            a.phase,
            backend.batch_label(a.first_batch) if a.first_batch else "",
            ", ".join(a.consumers),
            a.name,
        )
        + ((a.fingerprint[:12], a.path, *provenance_cells(a.provenance)) if wide else ())
        for a in found
    ]
    print_table(
        f"{len(found)} artifacts ({backend.location})",
        ("DATASET", "SEMANTIC", "STAGE", "PHASE", "FIRST BATCH", "CONSUMERS", "ARTIFACT")
        + (("FINGERPRINT", "PATH", *PROVENANCE_COLUMNS) if wide else ()),
        rows,
        name_column="ARTIFACT",
    )


PROVENANCE_COLUMNS = ("RECIPE", "DATASWEEP", "IMAGE", "MODELS", "GPU")


def provenance_cells(provenance: Provenance | None) -> tuple[str, ...]:
    """`artifacts -o wide`: recipe and datasweep version, image with its short digest, the models the API
    answered with (counted), the GPU; `-` where nothing was recorded (an Artifact made before provenance)."""
    if provenance is None:
        return ("-",) * len(PROVENANCE_COLUMNS)
    image = provenance.image or ""
    if provenance.image_digest:
        image = f"{image}@{provenance.image_digest[:19]}" if image else provenance.image_digest[:19]
    models = ", ".join(f"{name} x{count}" for name, count in provenance.models.items())
    gpu = provenance.gpu or ""
    if provenance.gpu_count and provenance.gpu != "cpu":
        gpu = f"{gpu} x{provenance.gpu_count}"
    cells = (str(provenance.recipe or ""), provenance.datasweep_version or "", image, models, gpu)
    return tuple(cell or "-" for cell in cells)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key in sorted(value):
            flat.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


@click.command("compare")
@click.argument("first")
@click.argument("second")
@backend_options
@output_option
def compare(
    first: str,
    second: str,
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    output: str,
) -> None:
    """Same and different canonical parameters of two artifacts (was batch_tools/compare_experiments.py).

    FIRST/SECOND: an artifact name, a fingerprint prefix, Dataset/semantic or a shared/batch path.
    """
    backend = _backend(root, cluster, namespace, kube_context)
    found = backend.artifacts()
    a, b = one_artifact(found, first), one_artifact(found, second)
    flat_a, flat_b = flatten(a.params), flatten(b.params)
    same = {k: flat_a[k] for k in flat_a if k in flat_b and flat_a[k] == flat_b[k]}
    different = {
        k: {"first": flat_a.get(k), "second": flat_b.get(k)}
        for k in sorted(set(flat_a) | set(flat_b))
        if flat_a.get(k) != flat_b.get(k) or (k in flat_a) != (k in flat_b)
    }
    if output != "table":
        click.echo(dump({"first": a.name, "second": b.name, "same": same, "different": different}, output))
        return
    click.echo(f"1: {a.name}  ({a.path})\n2: {b.name}  ({b.path})")
    if a.fingerprint == b.fingerprint:
        click.echo("same fingerprint: these are one and the same result")
    print_table("same parameters", ("PARAMETER", "VALUE"), sorted(same.items()))
    print_table(
        "different parameters",
        ("PARAMETER", "1", "2"),
        [(k, v["first"], v["second"]) for k, v in different.items()],
    )


# ---- paths / resolve ----


def _point_paths(backend: Backend, dataset: str | None, batch_id: str | None) -> list[dict[str, Any]]:
    views = [one_batch(backend, batch_id)] if batch_id else backend.batches()
    rows = []
    for view in views:
        for p in view.points:
            if dataset is not None and p.dataset != dataset:
                continue
            base = f"{backend.display_root}/{p.path}"
            rows.append(
                {
                    "batch": view.batch_id,
                    "dataset": p.dataset,
                    "semanticName": p.name,
                    "ready": p.ready,
                    "reused": p.reused,
                    "data": {"path": f"{base}/{p.dataset}"},
                    "sharedPath": f"{backend.display_root}/{p.shared_path}/{p.dataset}" if p.shared_path else None,
                    "artifact": p.artifact,
                }
            )
    return rows


@click.command("paths")
@backend_options
@click.option("--dataset", default=None, help="only this dataset")
@click.option("--batch", "batch_id", default=None, help="only this batch")
@click.option(
    "--format",
    "-o",
    "--output",
    "fmt",
    type=click.Choice(("yaml", "json", "table")),
    default="table",
    show_default=True,
    help="yaml: `data: {path: ...}` blocks to paste into a training config",
)
@click.option("--all", "show_all", is_flag=True, help="also points that are not ready (failed, running, pending)")
def paths(
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    dataset: str | None,
    batch_id: str | None,
    fmt: str,
    show_all: bool,
) -> None:
    """Data paths for training configs, one per ready batch point (was batch_tools/list_data_paths.py)."""
    backend = _backend(root, cluster, namespace, kube_context)
    every = _point_paths(backend, dataset, batch_id)
    rows = every if show_all else [r for r in every if r["ready"]]
    if len(rows) < len(every):
        click.echo(f"note: {len(every) - len(rows)} point(s) not ready are left out (--all lists them)", err=True)
    if not rows:
        where = " ".join(
            x for x in (f"dataset {dataset}" if dataset else "", f"batch {batch_id}" if batch_id else "") if x
        )
        raise BadInput(f"no batch points{' for ' + where if where else ''} in {backend.location}")
    if fmt == "json":
        click.echo(dump(rows, "json"))
    elif fmt == "yaml":
        blocks = []
        for row in rows:
            state = "ready" if row["ready"] else "NOT READY"
            blocks.append(
                f"# {row['dataset']} {row['semanticName']} ({row['batch']}, {state})\n"
                + dump({"data": row["data"]}, "yaml").rstrip("\n")
            )
        click.echo("\n---\n".join(blocks))
    else:
        print_table(
            None,
            ("BATCH", "DATASET", "SEMANTIC", "READY", "DATA PATH"),
            [
                (
                    backend.batch_label(r["batch"]),
                    r["dataset"],
                    r["semanticName"],
                    _yes_no(r["ready"]),
                    r["data"]["path"],
                )
                for r in rows
            ],
        )


@click.command("resolve")
@click.argument("path")
@backend_options
@output_option
def resolve(
    path: str, root: Path | None, cluster: bool, namespace: str | None, kube_context: str | None, output: str
) -> None:
    """PATH (batch path, shared path, fingerprint or artifact) -> the others (was batch_tools/resolve_data_path.py)."""
    backend = _backend(root, cluster, namespace, kube_context)
    batch_part, dataset, name, rest = split_store_path(path)
    if isinstance(backend, LocalBackend) and batch_part and dataset and name:
        entry = backend.root / batch_part / dataset / name
        if entry.is_symlink() and not entry.exists():
            import os

            raise BadInput(
                f"broken symlink: {entry} -> {os.readlink(entry)} (the shared directory is gone); "
                f"remove the link or rerun the experiment that produced it"
            )
        if not entry.is_symlink() and not entry.exists():
            raise BadInput(f"{entry}: no such batch entry; list the batch with `datasweep batch {batch_part}`")
    artifact = one_artifact(backend.artifacts(), path)
    views = [
        f"{backend.display_root}/{p.path}"
        for b in backend.batches()
        for p in b.points
        if p.shared_path == artifact.path or p.artifact == artifact.name
    ]
    suffix = f"/{rest}" if rest else ""
    data = {
        "artifact": artifact.name,
        "stage": artifact.stage,
        "dataset": artifact.dataset,
        "semanticName": artifact.semantic_name,
        "fingerprint": artifact.fingerprint,
        "shortFingerprint": artifact.fingerprint[:12],
        "legacyFingerprint": artifact.legacy_fingerprint,
        "sharedPath": f"{backend.display_root}/{artifact.path}{suffix}",
        "batchPaths": [f"{v}{suffix}" for v in views],
        "firstBatch": artifact.first_batch,
        "ready": artifact.ready,
    }
    if output != "table":
        click.echo(dump(data, output))
        return
    print_table(None, ("FIELD", "VALUE"), [(k, "\n".join(v) if isinstance(v, list) else v) for k, v in data.items()])


# ---- publish ----


@click.command("publish")
@click.argument("artifact_ident", metavar="ARTIFACT")
@click.option(
    "--dest",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="legacy data directory, e.g. Data/rejection_sampling/0_data",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="cluster backend: where the data volume is mounted on this machine",
)
@click.option("--overwrite", is_flag=True, help="replace files that already exist in the destination")
@backend_options
def publish(
    artifact_ident: str,
    dest: Path,
    data_root: Path | None,
    overwrite: bool,
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
) -> None:
    """Copy ARTIFACT's dataset files to the flat legacy layout DEST/<Dataset>/ (was batch_tools/publish_dataset.py)."""
    backend = _backend(root, cluster, namespace, kube_context)
    artifact = one_artifact(backend.artifacts(), artifact_ident)
    if isinstance(backend, LocalBackend):
        base = backend.root
    elif data_root is not None:
        base = data_root
    else:
        raise BadInput("publish on the cluster backend needs --data-root: where the data volume is mounted here")
    if artifact.stage != "generate":
        raise BadInput(f"{artifact.name} is a {artifact.stage} artifact; publish copies generated datasets")
    if not artifact.ready:
        raise BadInput(f"{artifact.name} is {artifact.phase}, not Ready; nothing complete to publish")
    source = base / artifact.path / artifact.dataset
    files = sorted(source.glob("*.jsonl")) if source.is_dir() else []
    if not files:
        raise Failed(f"{source}: no dataset files (*.jsonl) to publish")
    target = dest / artifact.dataset
    clashes = [f.name for f in files if (target / f.name).exists()]
    if clashes and not overwrite:
        raise BadInput(f"{target} already has {', '.join(clashes)}; pass --overwrite to replace them")
    from datasweep.store.atomic import atomic_open

    try:
        for file in files:
            with file.open("rb") as src, atomic_open(target / file.name, "wb", encoding=None) as out:
                shutil.copyfileobj(src, out)
    except OSError as exc:
        raise BadInput(
            f"--dest {dest}: cannot write {exc.filename or target} ({exc.strerror or exc}); "
            f"choose a directory you can write to"
        ) from exc
    click.echo(f"published {len(files)} files of {artifact.name} to {target}")
