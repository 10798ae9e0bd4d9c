"""`datasweep gc` (FAQ Q2/Q5 without the manual steps) and `datasweep import` (existing seed-format trees)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from datasweep import GROUP, VERSION
from datasweep.api.worker import DATA_STAGES
from datasweep.cli.backends import ArtifactView, ClusterBackend, LocalBackend
from datasweep.cli.common import (
    BadInput,
    backend_options,
    choose_backend,
    dump,
    human_bytes,
    output_option,
    print_table,
)
from datasweep.core import naming
from datasweep.core.fingerprint import fingerprint as sha256_fingerprint
from datasweep.core.fingerprint import short
from datasweep.k8s import labels as k8s_labels
from datasweep.local.registry import LocalArtifact, Registry, now_iso
from datasweep.local.runner import claim_is_dead
from datasweep.store.inputs import seed_generate_roles
from datasweep.store.layout import SHARED, LayoutError, dataset_files
from datasweep.store.manifest import (
    FINGERPRINT_NAME,
    MANIFEST_NAME,
    ManifestSummary,
    read_manifest,
    scan_files,
    write_manifest,
)
from datasweep.store.requests import Compaction, RequestStore, referenced_identities
from datasweep.store.verify import DAMAGED_MARK

SUPERSEDED_MARK = ".superseded-"


def dir_size(path: Path) -> int:
    total = 0
    for current, _, files in os.walk(path):
        for name in files:
            full = Path(current) / name
            if not full.is_symlink():
                total += full.stat().st_size
    return total


@dataclass
class GcCandidate:
    path: str  # relative to the root
    reason: str
    artifacts: list[str]
    size: int
    links: list[str] = field(default_factory=list)  # batch view entries (relative) that lead to it

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "reason": self.reason, "artifacts": self.artifacts}
        data["bytes"] = self.size
        if self.links:
            data["batchViews"] = self.links
        return data


def _dead_reason(record: LocalArtifact) -> str | None:
    """Why a claim protects nothing (the runner's `claim_is_dead`); imported directories were never ours to run."""
    if record.imported or not claim_is_dead(record):
        return None
    return (
        "failed, never completed (a rerun would start it over)"
        if record.phase == "Failed"
        else ("claimed, never started")
    )


def protected_paths(backend: LocalBackend, dead: set[str] | None = None) -> set[str]:
    """Every shared path a batch view links to (a view protects the whole directory, training included),
    except dead claims (`dead`): a failed or never-started point protects nothing."""
    dead = dead or set()
    return {p.shared_path for b in backend.batches() for p in b.points if p.shared_path and p.shared_path not in dead}


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent + "/")


def local_gc_candidates(backend: LocalBackend) -> tuple[list[GcCandidate], list[str]]:
    artifacts = backend.artifacts()
    dead = {record.name: why for record in backend.registry.artifacts() if (why := _dead_reason(record))}
    dead_paths = {a.path for a in artifacts if a.name in dead and a.stage in DATA_STAGES}
    protected = protected_paths(backend, dead_paths)
    by_name = {a.name: a for a in artifacts}
    # inputs of a protected artifact are protected too (a training stage's data)
    keep = {a.name for a in artifacts if a.name not in dead and any(_under(a.path, p) for p in protected)}
    keep |= {a.name for a in artifacts if a.phase == "Running"}
    keep = _with_inputs(keep, by_name)
    views: dict[str, list[str]] = {}
    for b in backend.batches():
        for p in b.points:
            if p.shared_path:
                views.setdefault(p.shared_path, []).append(p.path)
    candidates: list[GcCandidate] = []
    offered: set[str] = set()
    for a in artifacts:
        if a.name in keep or a.stage not in DATA_STAGES:
            continue
        nested = [b.name for b in artifacts if _under(b.path, a.path)]
        if any(name in keep for name in nested):
            continue
        offered.update(nested)
        directory = backend.root / a.path
        links = views.get(a.path, [])
        if not directory.exists():
            candidates.append(GcCandidate(a.path, "its directory is gone: a stale record", nested, 0, links))
        else:
            reason = dead.get(a.name) or "no batch view links to it"
            candidates.append(GcCandidate(a.path, reason, nested, dir_size(directory), links))
    # a failed or never-started training stage inside a kept directory: its own directory and record go
    for a in artifacts:
        if a.stage not in DATA_STAGES and a.name in dead and a.name not in offered and a.name not in keep:
            directory = backend.root / a.path
            size = dir_size(directory) if directory.exists() else 0
            candidates.append(GcCandidate(a.path, dead[a.name], [a.name], size))
    shared = backend.root / SHARED
    for aside in sorted(shared.glob(f"*/.*{SUPERSEDED_MARK}*")) if shared.is_dir() else []:
        rel = str(aside.relative_to(backend.root))
        candidates.append(GcCandidate(rel, "superseded by forceRegenerate", [], dir_size(aside)))
    damaged = (f"*/.*{DAMAGED_MARK}*", f"*/*/train/.*{DAMAGED_MARK}*")
    for aside in sorted(p for pattern in damaged for p in shared.glob(pattern)) if shared.is_dir() else []:
        rel = str(aside.relative_to(backend.root))
        candidates.append(GcCandidate(rel, "damaged (datasweep verify), produced again", [], dir_size(aside)))
    warnings = [f"{p.path}: {p.broken}" for b in backend.batches() for p in b.points if p.broken]
    return candidates, warnings


def _with_inputs(keep: set[str], by_name: dict[str, Any]) -> set[str]:
    """What is kept keeps its inputs too (a training stage's data), transitively."""
    kept, frontier = set(keep), list(keep)
    while frontier:
        for name in by_name[frontier.pop()].inputs:
            if name in by_name and name not in kept:
                kept.add(name)
                frontier.append(name)
    return kept


def cluster_gc_candidates(backend: ClusterBackend) -> list[GcCandidate]:
    artifacts = backend.artifacts()
    referenced = {p.artifact for b in backend.batches() for p in b.points if p.artifact}
    experiments = {o["metadata"]["name"] for o in backend._list("experiments")}
    by_name = {a.name: a for a in artifacts}
    # a Failed Artifact (retries exhausted) protects nothing: a fixed Experiment makes a new fingerprint
    failed = {a.name for a in artifacts if a.phase == "Failed"}
    keep = {
        a.name for a in artifacts if a.name not in failed and (a.name in referenced or set(a.consumers) & experiments)
    }
    keep |= {a.name for a in artifacts if a.phase in ("Running", "Waiting")}
    keep = _with_inputs(keep, by_name)
    return [
        GcCandidate(
            a.path,
            "failed, never completed" if a.name in failed else "no batch or experiment references it",
            [a.name],
            (a.manifest.bytes if a.manifest else 0),
        )
        for a in artifacts
        if a.name not in keep
    ]


# The chart's CronJob that compacts the data volume's request store (charts/datasweep, values requestStoreGc).
REQUEST_STORE_CRONJOB = "<release>-request-store-gc"
KEEP_RECENT_DEFAULT = "24h"
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType[timedelta]):
    """24h, 30m, 7d, 90s, or 0."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", str(value).strip())
        if match is None or (not match[2] and float(match[1]) != 0):
            self.fail(f"{value!r} is not a duration: write it like 24h, 30m, 7d or 90s (0: none)", param, ctx)
        return timedelta(seconds=float(match[1]) * DURATION_UNITS[match[2] or "s"])


def _keep_after(keep_recent: timedelta) -> datetime | None:
    """Answers first stored after this moment stay whoever lists them (None: no grace period)."""
    return datetime.now(UTC) - keep_recent if keep_recent else None


def _recent_note(compaction: Compaction, keep_recent: timedelta) -> str:
    if not compaction.recent:
        return ""
    return f"; {compaction.recent:,} more kept as younger than {_duration_text(keep_recent)} (--keep-recent)"


def _duration_text(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in sorted(DURATION_UNITS.items(), key=lambda item: -item[1]):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{value.total_seconds()}s"


def gc_request_store(root: Path, output: str, yes: bool, keep_recent: timedelta) -> None:
    """`gc --request-store`: compact only the request store of the volume at `root`, keeping what any Artifact
    directory on it lists (a cluster's volume has no local registry: its directories are what counts)."""
    shared = root / SHARED
    if not shared.is_dir():
        raise BadInput(
            f"{root}: no {SHARED}/ directory; pass --root the data volume's root as mounted here "
            "(the chart's data.dataRoot, /data by default)"
        )
    store = RequestStore.under(shared)
    result = store.compact(referenced_identities(shared), dry_run=not yes, keep_after=_keep_after(keep_recent))
    if output != "table":
        store_data = {"answers": result.dropped, "bytes": result.freed, "keptRecent": result.recent}
        click.echo(dump({"dryRun": not yes, "bytes": result.freed, "requestStore": store_data}, output))
    else:
        click.echo(
            f"request store {store.root}: {result.dropped:,} stored answers no Artifact lists "
            f"({human_bytes(result.freed)}){_recent_note(result, keep_recent)}"
        )
    if yes:
        click.echo(f"compacted: dropped {result.dropped:,}, freed {human_bytes(result.freed)}", err=True)
    else:
        click.echo(f"dry run: would free {human_bytes(result.freed)}; pass --yes to compact", err=True)


@click.command("gc")
@backend_options
@output_option
@click.option("--yes", is_flag=True, help="really delete (default: a dry run that says what it would free)")
@click.option(
    "--keep-recent",
    type=Duration(),
    default=KEEP_RECENT_DEFAULT,
    show_default=True,
    help="keep stored answers (request store) first answered within this long, whether or not an Artifact "
    "lists them: a worker that runs meanwhile may not have listed them yet (0: keep only what is listed)",
)
@click.option(
    "--request-store",
    "request_store_only",
    is_flag=True,
    help="compact only the request store of the data volume at --root (the cluster's volume mounted here, as "
    "the chart's CronJob does), keeping what any Artifact directory on it lists",
)
def gc(
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    output: str,
    yes: bool,
    keep_recent: timedelta,
    request_store_only: bool,
) -> None:
    """Delete artifacts no batch view references (dry run unless --yes). Never touches what a batch links to."""
    if request_store_only:
        if cluster or root is None:
            raise BadInput(
                "--request-store compacts the request store of a data volume mounted here: pass --root DIR "
                "(the volume's root, which holds _shared/), without --cluster"
            )
        gc_request_store(root, output, yes, keep_recent)
        return
    backend = choose_backend(root, cluster, namespace, kube_context)
    warnings: list[str] = []
    store: RequestStore | None = None
    keep: set[str] = set()
    unreferenced = Compaction(0, 0, 0)  # stored answers no Artifact that stays lists, and their bytes
    if isinstance(backend, LocalBackend):
        backend.require_root()
        candidates, warnings = local_gc_candidates(backend)
        store = RequestStore.under(backend.root / SHARED)
        if store.shards():
            gone = {backend.root / c.path for c in candidates}
            keep = referenced_identities(backend.root / SHARED, gone)
            unreferenced = store.compact(keep, dry_run=True, keep_after=_keep_after(keep_recent))
    else:
        candidates = cluster_gc_candidates(backend)
    total = sum(c.size for c in candidates) + unreferenced.freed
    if output != "table":
        data = {"dryRun": not yes, "bytes": total, "candidates": [c.to_dict() for c in candidates]}
        data["requestStore"] = {
            "answers": unreferenced.dropped,
            "bytes": unreferenced.freed,
            "keptRecent": unreferenced.recent,
        }
        click.echo(dump(data, output))
    else:
        print_table(
            f"{len(candidates)} unreferenced ({backend.location})",
            ("PATH", "WHY", "SIZE", "ARTIFACTS"),
            [(c.path, c.reason, human_bytes(c.size), ", ".join(c.artifacts)) for c in candidates],
            name_column="PATH",
        )
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if unreferenced.dropped or unreferenced.recent:
        click.echo(
            f"request store: {unreferenced.dropped:,} stored answers no remaining Artifact used "
            f"({human_bytes(unreferenced.freed)}){_recent_note(unreferenced, keep_recent)}",
            err=True,
        )
    if isinstance(backend, ClusterBackend):
        click.echo(
            f"the data volume's request store is compacted by the chart's CronJob {REQUEST_STORE_CRONJOB} "
            "(values requestStoreGc), or by `datasweep gc --request-store --root DIR` where the volume is mounted",
            err=True,
        )
    if not yes:
        click.echo(f"dry run: would free {human_bytes(total)}; pass --yes to delete", err=True)
        return
    for candidate in candidates:
        if isinstance(backend, LocalBackend):
            for link in candidate.links:
                (backend.root / link).unlink(missing_ok=True)
            if (backend.root / candidate.path).exists():
                shutil.rmtree(backend.root / candidate.path)
            for name in candidate.artifacts:
                backend.registry.delete_artifact(name)
            backend.registry.forget_points(set(candidate.artifacts))
        else:
            for name in candidate.artifacts:
                backend.api.delete_namespaced_custom_object(GROUP, VERSION, backend.namespace, "artifacts", name)
    if store is not None and unreferenced.dropped:
        # what stays, and what a worker listed meanwhile
        store.compact(referenced_identities(store.root.parent), keep_after=_keep_after(keep_recent))
    freed = "the Artifact objects were deleted; files on the volume stay" if isinstance(backend, ClusterBackend) else ""
    click.echo(f"deleted {len(candidates)}, freed {human_bytes(total)}{'; ' + freed if freed else ''}", err=True)


# ---- unlink: take points or an experiment out of a batch ----


@click.command("unlink")
@click.argument("batch_id", metavar="BATCH")
@click.argument("points", nargs=-1, metavar="[POINT]...")
@click.option("--experiment", default=None, help="every point this experiment recorded in the batch")
@backend_options
def unlink(
    batch_id: str,
    points: tuple[str, ...],
    experiment: str | None,
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
) -> None:
    """Remove POINTs (`Dataset/semantic`, a semantic name or a batch path) or an experiment from BATCH.

    The batch view links and the batch record's points go; the data stays, for other batches or for
    `datasweep gc` once nothing links to it.
    """
    from datasweep.cli.tools import one_batch, split_store_path

    backend = choose_backend(root, cluster, namespace, kube_context)
    if not isinstance(backend, LocalBackend):
        raise BadInput(
            "unlink works on a local store (--root); on a cluster a Batch lists what its Experiments "
            "produce: delete the Experiment (`kubectl delete exp NAME`) and the Artifacts stay for `datasweep gc`"
        )
    if not points and experiment is None:
        raise BadInput("name the points to remove (e.g. Copa/temp05_topp10_gpt4o) or pass --experiment NAME")
    view = one_batch(backend, batch_id)
    batch_id = view.batch_id  # either spelling was accepted; the registry and the directory use the id
    chosen = []
    for ident in points:
        _, dataset, name, _ = split_store_path(ident)
        matches = [
            p
            for p in view.points
            if ident in (p.name, p.path, f"{p.dataset}/{p.name}") or (dataset, name) == (p.dataset, p.name)
        ]
        if not matches:
            names = ", ".join(f"{p.dataset}/{p.name}" for p in view.points) or "none"
            raise BadInput(f"{ident!r} is not a point of {batch_id}; its points: {names}")
        if len(matches) > 1:
            raise BadInput(f"{ident!r} matches {len(matches)} points of {batch_id}; write it as Dataset/semantic")
        chosen.extend(matches)
    if experiment is not None:
        if experiment not in view.experiments:
            known = ", ".join(view.experiments) or "none"
            raise BadInput(f"experiment {experiment!r} has no points in {batch_id}; its experiments: {known}")
        chosen.extend(p for p in view.points if p.experiment == experiment and p not in chosen)
    record = backend.registry.get_batch(batch_id)
    others = {
        (p.dataset, Path(p.path or "").name)
        for p in (record.points if record else [])
        if experiment is not None and p.experiment != experiment
    }
    removed = 0
    for point in chosen:
        if experiment is not None and not points and (point.dataset, point.name) in others:
            continue  # another experiment of the batch still has this point
        (backend.root / point.path).unlink(missing_ok=True)
        removed += 1
        with contextlib.suppress(OSError):
            (backend.root / point.path).parent.rmdir()  # only when empty
    named = {p.artifact for p in chosen[: len(points)] if p.artifact}
    backend.registry.forget_points(named, batch_id=batch_id, experiment=experiment)
    click.echo(f"removed {removed} point(s) from {batch_id}; the data stays until `datasweep gc`", err=True)


# ---- import ----

METADATA_NAMES = ("experiment_metadata.json",)
NOT_PARAMS = {
    "batch_id",
    "first_batch",
    "purpose",
    "description",
    "created_at",
    "created",
    "fingerprint",
    "semantic_name",
    "semantic_dirname",
    "dataset",
    "dataset_name",
    "stage",
    "artifact",
    "first_experiment",
    "usage",
    "lineage",
    "experiment",
}


def _metadata_params(meta: dict[str, Any]) -> dict[str, Any]:
    for key in ("canonical", "parameters", "params", "fingerprint_params"):
        if isinstance(meta.get(key), dict):
            value: dict[str, Any] = meta[key]
            return value
    return {k: v for k, v in meta.items() if k not in NOT_PARAMS}


def _metadata_batch(meta: dict[str, Any]) -> str | None:
    for holder in (meta, meta.get("experiment") if isinstance(meta.get("experiment"), dict) else {}):
        for key in ("first_batch", "batch_id", "batch"):
            value = holder.get(key) if isinstance(holder, dict) else None
            if isinstance(value, str) and value:
                return value
    return None


def _first_experiment(meta: dict[str, Any]) -> str | None:
    for key in ("first_experiment", "experiment"):
        if isinstance(meta.get(key), str) and meta[key]:
            return str(meta[key])
    return None


@dataclass
class ImportedDir:
    artifact: LocalArtifact
    source: str


def scan_seed_tree(tree: Path) -> tuple[list[ImportedDir], list[str]]:
    """Every `_shared/<Dataset>/<name>/` with a `.fingerprint`, as a generate artifact; problems as messages."""
    shared = tree / SHARED
    if not shared.is_dir():
        raise BadInput(f"{tree}: no {SHARED}/ directory; import takes a Data_v2/synthetic-style tree")
    links: dict[str, list[str]] = {}
    for link in sorted(tree.glob("batch_*/*/*")):
        if link.is_symlink() and link.exists():
            target = link.resolve()
            try:
                links.setdefault(str(target.relative_to(tree.resolve())), []).append(link.parts[-3])
            except ValueError:
                continue
    found: list[ImportedDir] = []
    problems: list[str] = []
    for directory in sorted(p for p in shared.glob("*/*") if p.is_dir() and not p.name.startswith(".")):
        dataset, name = directory.parent.name, directory.name
        rel = f"{SHARED}/{dataset}/{name}"
        fp_file = directory / FINGERPRINT_NAME
        if not fp_file.is_file():
            problems.append(
                f"{directory}: no {FINGERPRINT_NAME}; skipped (not an experiment directory of a Data_v2 tree)"
            )
            continue
        legacy = fp_file.read_text(encoding="utf-8").strip()
        meta: dict[str, Any] = {}
        meta_file = directory / METADATA_NAMES[0]
        if meta_file.is_file():
            try:
                loaded = json.loads(meta_file.read_text(encoding="utf-8"))
                meta = loaded if isinstance(loaded, dict) else {}
            except json.JSONDecodeError as exc:
                problems.append(f"{meta_file}:{exc.lineno}: not valid JSON ({exc.msg}); imported without parameters")
        native = len(legacy) == 64 and all(c in "0123456789abcdef" for c in legacy)
        full = legacy if native else sha256_fingerprint({"imported": legacy, "dataset": dataset, "name": name})
        semantic = str(meta.get("semantic_name") or meta.get("semantic_dirname") or name)
        batches = sorted(links.get(rel, []))
        first_batch = _metadata_batch(meta) or (batches[0] if batches else None)
        manifest = read_manifest(directory)
        roles = seed_generate_roles(directory, dataset) if manifest is None else None
        has_data = manifest is not None or (roles is not None and bool(roles.data))
        if manifest is None and roles is not None and roles.data:
            try:  # the manifest is what training stages read their inputs from
                manifest = write_manifest(directory, fingerprint=full, stage="generate", roles=roles)
            except OSError as exc:
                problems.append(f"{directory}: cannot write {MANIFEST_NAME} ({exc}); training cannot read it")
        if manifest is not None:
            summary = manifest.summary()
        else:
            files = scan_files(directory)
            data_files = [f for f in files if f.path.endswith(".jsonl")]
            summary = ManifestSummary(
                files=len(files),
                rows=sum(f.rows or 0 for f in data_files),
                bytes=sum(f.bytes for f in files),
                sha256=sha256_fingerprint(sorted((f.path, f.sha256) for f in files)),
            )
        if not has_data:
            problems.append(
                f"{directory}: no data files {dataset}/{dataset.lower()}_<split>.jsonl; registered as Pending"
            )
        artifact = LocalArtifact(
            name=str(meta.get("artifact") or naming.artifact_name(dataset, semantic, short(full))),
            stage="generate",
            dataset=dataset,
            semantic_name=semantic,
            fingerprint=full,
            path=rel,
            params=_metadata_params(meta),
            phase="Ready" if has_data else "Pending",
            first_batch=first_batch,
            first_experiment=meta.get("first_experiment") if isinstance(meta.get("first_experiment"), str) else None,
            consumers=[],
            manifest=summary,
            created_at=str(meta.get("created_at") or now_iso()),
            imported=not native,
            legacy_fingerprint=None if native else legacy,
        )
        found.append(ImportedDir(artifact, str(directory)))
    return found, problems


def _source_hashes(sources: tuple[str, ...]) -> dict[str, str]:
    """`--source Copa=DIR`: the dataset's content hash, exactly as the planner takes it."""
    hashes: dict[str, str] = {}
    for entry in sources:
        dataset, sep, directory = entry.partition("=")
        if not sep or not dataset or not directory:
            raise BadInput(f"--source {entry!r}: give DATASET=DIR, e.g. --source Copa=data/copa")
        try:
            hashes[dataset] = dataset_files(Path(directory), dataset).sha256
        except LayoutError as exc:
            raise BadInput(f"--source {entry}: {exc}") from exc
    return hashes


@click.command("import")
@click.argument("tree", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="DATASET=DIR",
    help="The dataset the tree's DATASET directories were generated from (<dataset>_<split>.jsonl): its content "
    "hash is recorded, so that a new point with the same parameters, prompt hashes and data reuses them "
    "(repeatable; may be given again on a tree already imported)",
)
@backend_options
@output_option
def import_tree(
    tree: Path,
    sources: tuple[str, ...],
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    output: str,
) -> None:
    """Register an existing Data_v2/synthetic-style TREE as artifacts, without moving any data.

    Locally the registry is written inside TREE (`TREE/.datasweep/`); with --cluster, Artifact objects are
    created whose storage path is relative to TREE (TREE must be the data volume's root as mounted here).
    """
    if root is not None and not cluster and root.resolve() != tree.resolve():
        raise BadInput(f"import registers {tree} in place; pass --root {tree} (or leave --root out), not --root {root}")
    hashes = _source_hashes(sources)
    to_cluster = cluster or (root is None and choose_backend(None, False, namespace, kube_context).kind == "cluster")
    found, problems = scan_seed_tree(tree)
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    unknown = sorted(set(hashes) - {item.artifact.dataset for item in found})
    if unknown:
        raise BadInput(f"--source {unknown[0]}=...: the tree has no _shared/{unknown[0]}/ directories to match")
    for item in found:
        if item.artifact.dataset in hashes:
            item.artifact = item.artifact.model_copy(update={"source_sha256": hashes[item.artifact.dataset]})
    created = 0
    if to_cluster:
        backend = choose_backend(None, True, namespace, kube_context)
        created = _import_to_cluster(backend, found)
        where = backend.location
    else:
        registry = Registry(tree)
        with registry.locked():
            for item in found:
                existing = registry.get_artifact(item.artifact.name)
                if existing is None:
                    registry.put_artifact(item.artifact)
                    created += 1
                elif item.artifact.source_sha256 and existing.source_sha256 != item.artifact.source_sha256:
                    registry.put_artifact(existing.model_copy(update={"source_sha256": item.artifact.source_sha256}))
        where = str(tree / ".datasweep")
    rows = [a.artifact for a in found]
    if output != "table":
        click.echo(dump([r.model_dump(mode="json", by_alias=True) for r in rows], output))
    else:
        print_table(
            f"{len(rows)} directories, {created} newly registered ({where})",
            ("DATASET", "SEMANTIC", "PHASE", "FIRST BATCH", "ROWS", "ARTIFACT"),
            [
                (
                    r.dataset,
                    r.semantic_name,
                    r.phase,
                    r.first_batch or "",
                    r.manifest.rows if r.manifest else "",
                    r.name,
                )
                for r in rows
            ],
        )


def imported_artifact_body(a: LocalArtifact) -> dict[str, Any]:
    """The Artifact object of an imported directory. `import --source` adds the dataset's hash as an annotation:
    with it and spec.params (the recorded parameters) the operator matches planned points from its index."""
    source = {k8s_labels.SOURCE_SHA256: a.source_sha256} if a.source_sha256 else {}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Artifact",
        "metadata": {
            "name": a.name,
            "labels": {k8s_labels.IMPORTED: "true", k8s_labels.STAGE: a.stage},
            "annotations": {k8s_labels.LEGACY_FINGERPRINT: a.legacy_fingerprint or "", **source},
        },
        "spec": {
            "stage": a.stage,
            "dataset": a.dataset,
            "fingerprint": a.fingerprint,
            "semanticName": a.semantic_name,
            "params": a.params,
            "storage": {"path": a.path},
        },
    }


def _import_to_cluster(backend: ClusterBackend, found: list[ImportedDir]) -> int:
    from kubernetes.client.exceptions import ApiException

    created = 0
    for item in found:
        a = item.artifact
        body = imported_artifact_body(a)
        try:
            backend.api.create_namespaced_custom_object(GROUP, VERSION, backend.namespace, "artifacts", body)
            created += 1
        except ApiException as exc:
            if exc.status != 409:
                raise BadInput(f"creating Artifact {a.name}: {exc.status} {exc.reason}: {exc.body}") from exc
            if a.source_sha256:  # --source given again on a tree already imported
                annotations = {k8s_labels.SOURCE_SHA256: a.source_sha256}
                backend.api.patch_namespaced_custom_object(
                    GROUP, VERSION, backend.namespace, "artifacts", a.name, {"metadata": {"annotations": annotations}}
                )
        status = {
            "status": {
                "phase": a.phase,
                "firstBatch": a.first_batch,
                "firstBatchName": naming.batch_object_name(a.first_batch) if a.first_batch else None,
                "completedAt": a.created_at,
                "manifest": a.manifest.model_dump(mode="json", by_alias=True, exclude_none=True)
                if a.manifest
                else None,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if a.phase == "Ready" else "False",
                        "reason": "Imported",
                        "message": f"imported from {item.source}",
                        "lastTransitionTime": now_iso().replace("+00:00", "Z"),
                    }
                ],
            }
        }
        backend.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, backend.namespace, "artifacts", a.name, status
        )
    return created


__all__ = ["ArtifactView", "gc", "import_tree", "unlink"]
