"""`datasweep watch EXPERIMENT`: one sweep followed live, on a local root or on the cluster.

Points by phase, percent done, dollars and tokens so far, requests or steps of the running stages, an ETA,
and the failures with their reasons. On the cluster it reads the Experiment's status (the operator sums its
Artifacts' progress reports there: controller/aggregate.py); on a local root it sums the registry and the
running workers' progress files itself (core/progress.py, the same arithmetic).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from datasweep import GROUP, VERSION
from datasweep.api.experiment import SweepProgress
from datasweep.api.worker import DATA_STAGES
from datasweep.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, BadInput, backend_options, choose_backend
from datasweep.core.progress import StageState, cost_text, eta_seconds, sweep_fraction, sweep_progress
from datasweep.local.registry import LocalArtifact, Registry, RegistryError
from datasweep.store.progress import read_progress
from datasweep.workloads.progress import duration

FAILURES_SHOWN = 10
# Plain output (a pipe, a CI log) prints a line when something changed, and at least this often otherwise.
QUIET_LINE_S = 60.0


@dataclass
class Failure:
    artifact: str
    stage: str
    reason: str
    message: str


@dataclass
class Snapshot:
    """Where one sweep is, whichever store it came from."""

    experiment: str
    planned: bool  # the plan exists (the operator planned it, or `datasweep run` registered it)
    points: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    progress: SweepProgress = field(default_factory=SweepProgress)
    failures: list[Failure] = field(default_factory=list)
    failures_total: int = 0
    error: str = ""  # a sweep that cannot run at all (an invalid spec): finished and failed

    @property
    def finished(self) -> bool:
        if self.error:
            return True
        return self.planned and self.points > 0 and self.pending == 0 and self.running == 0

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.error or self.failed else EXIT_OK

    def headline(self) -> str:
        if self.error:
            return f"{self.experiment}: FAILED: {self.error}"
        if not self.planned:
            return f"{self.experiment}: not planned yet"
        p = self.progress
        parts = [
            f"{self.points} points: {self.succeeded} succeeded, {self.running} running, {self.pending} pending, "
            f"{self.failed} failed",
            f"{p.percent}% done",
            f"{p.cost} so far ({p.tokens:,} tokens)",
        ]
        if p.requests_total:
            parts.append(f"requests {p.requests_done}/{p.requests_total}")
        if p.steps_total:
            parts.append(f"steps {p.steps_done}/{p.steps_total}")
        if p.requests_stored:
            parts.append(
                f"{p.requests_stored:,} requests from the request store ({cost_text(p.saved_usd)} saved, "
                f"{p.rows_reused:,} rows wholly)"
            )
        if self.finished:
            parts.append("finished" if not self.failed else "finished with failures")
        else:
            parts.append(f"ETA {duration(p.eta_seconds)}" if p.eta_seconds is not None else "ETA ?")
        return f"{self.experiment}: " + "; ".join(parts)

    def lines(self) -> list[str]:
        out = [self.headline()]
        for failure in self.failures[:FAILURES_SHOWN]:
            stage = f" ({failure.stage})" if failure.stage else ""
            why = ": ".join(part for part in (failure.reason, failure.message) if part)
            out.append(f"  FAILED {failure.artifact}{stage}: {why}")
        more = self.failures_total - min(len(self.failures), FAILURES_SHOWN)
        if more > 0:
            out.append(f"  ... and {more} more failure(s)")
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["progress"] = self.progress.model_dump(mode="json", by_alias=True)
        data["finished"] = self.finished
        return data


# ---- the local root: the registry `datasweep run` keeps, and the workers' progress files ----


def _local_failure(registry: Registry, artifact: LocalArtifact) -> Failure:
    """The line of the worker's last log that says why (its error line, else its last line)."""
    from datasweep.local.runner import ERROR_START, log_tail

    log = registry.logs_dir / f"{artifact.name}-{max(artifact.attempts, 1)}.log"
    tail = [line for line in log_tail(log if log.exists() else None).splitlines() if line.strip()]
    why = next((line for line in tail if ERROR_START.match(line)), tail[-1] if tail else "no log")
    return Failure(artifact.name, artifact.stage, "WorkerFailed", f"{why.strip()[:300]} (log: {log})")


def local_snapshot(
    root: Path, experiment: str, origin: tuple[float, float] | None = None, now: float = 0.0
) -> tuple[Snapshot, float]:
    """The sweep as `datasweep run` recorded it under `root`, and its fraction done (for an ETA across calls)."""
    registry = Registry(root)
    try:
        mine = [a for a in registry.artifacts() if experiment in a.consumers]
    except RegistryError as exc:
        raise BadInput(str(exc)) from exc
    if not mine:
        known = sorted({c for a in registry.artifacts() for c in a.consumers})
        hint = f" (it has: {', '.join(known[:10])})" if known else " (it has none: run one with `datasweep run`)"
        raise BadInput(f"no experiment {experiment!r} in the local store {root}{hint}; pass --root or --cluster")
    data = [a for a in mine if a.stage in DATA_STAGES]
    snapshot = Snapshot(experiment, planned=True, points=len(data))
    states, reports = [], []
    for artifact in mine:
        report = read_progress(root / artifact.path) if artifact.phase != "Ready" else None
        produced = not artifact.imported and artifact.first_experiment == experiment
        reuse = report.request_reuse if report is not None else None
        if reuse is None and artifact.manifest is not None:
            reuse = artifact.manifest.request_reuse
        states.append(StageState(artifact.phase, produced, artifact.usage, report, reuse))
        if artifact.phase == "Running" and report is not None:
            reports.append(report)
    for point in data:
        phases = [point.phase] + [a.phase for a in mine if a.inputs[:1] == [point.name]]
        if "Failed" in phases:
            snapshot.failed += 1
        elif all(p == "Ready" for p in phases):
            snapshot.succeeded += 1
        elif "Running" in phases:
            snapshot.running += 1
    snapshot.pending = snapshot.points - snapshot.succeeded - snapshot.failed - snapshot.running
    failed = sorted((a for a in mine if a.phase == "Failed"), key=lambda a: a.name)
    snapshot.failures = [_local_failure(registry, a) for a in failed[:FAILURES_SHOWN]]
    snapshot.failures_total = len(failed)
    fraction = sweep_fraction(states, len(mine))
    eta = eta_seconds(origin, now, fraction)
    if eta is None and snapshot.pending == 0:  # all that is left runs now: the slowest worker's own estimate
        etas = [r.eta_seconds for r in reports]
        eta = round(max(e for e in etas if e is not None)) if etas and None not in etas else None
    snapshot.progress = sweep_progress(states, len(mine), eta)
    return snapshot, fraction


# ---- the cluster: the Experiment's status, which the operator keeps summed ----


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def snapshot_of_experiment(obj: dict[str, Any]) -> Snapshot:
    """A Snapshot from an Experiment object as the API server returns it. Pure."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    name = str(meta.get("name", ""))
    counts = status.get("counts") or {}
    planned = (
        status.get("observedGeneration") == meta.get("generation")
        and _condition(status, "Planned").get("status") != "False"
    )
    snapshot = Snapshot(
        name,
        planned=planned and bool(status.get("batch")),
        points=int(counts.get("points", 0)),
        pending=int(counts.get("pending", 0)),
        running=int(counts.get("running", 0)),
        succeeded=int(counts.get("succeeded", 0)),
        failed=int(counts.get("failed", 0)),
    )
    not_planned = _condition(status, "Planned")
    if not_planned.get("status") == "False" and _condition(status, "Failed").get("status") == "True":
        snapshot.error = f"{not_planned.get('reason', '')}: {not_planned.get('message', '')}"
    try:
        snapshot.progress = SweepProgress.model_validate(status.get("progress") or {})
    except ValueError:
        snapshot.progress = SweepProgress()  # an older operator: counts only
    failures = status.get("failures") or {}
    snapshot.failures = [
        Failure(f.get("artifact", ""), f.get("stage", ""), f.get("reason", ""), f.get("message", ""))
        for f in failures.get("items") or []
    ]
    snapshot.failures_total = int(failures.get("total", len(snapshot.failures)))
    return snapshot


def cluster_snapshot(backend: Any, experiment: str) -> Snapshot:
    from kubernetes.client.exceptions import ApiException

    try:
        obj = backend.api.get_namespaced_custom_object(GROUP, VERSION, backend.namespace, "experiments", experiment)
    except ApiException as exc:
        if exc.status == 404:
            raise BadInput(
                f"no Experiment {experiment!r} in {backend.location} (kubectl get exp -n {backend.namespace}); "
                "pass -n NAMESPACE or --root DIR for a local store"
            ) from exc
        raise BadInput(f"reading Experiment {experiment} in {backend.location}: {exc.status} {exc.reason}") from exc
    except OSError as exc:
        raise BadInput(f"cannot reach the cluster ({exc}); pass --root DIR for a local store") from exc
    return snapshot_of_experiment(obj)


# ---- the command ----


@click.command("watch")
@click.argument("experiment")
@backend_options
@click.option("--once", is_flag=True, help="print one snapshot and exit (0, or 1 when a point has failed)")
@click.option(
    "--interval",
    type=click.FloatRange(0.5, 3600),
    default=5.0,
    show_default=True,
    help="seconds between two looks at the sweep",
)
@click.option("-o", "--output", type=click.Choice(("text", "json")), default="text", help="json: one object a look")
def watch(
    experiment: str,
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    once: bool,
    interval: float,
    output: str,
) -> None:
    """Follow EXPERIMENT until it finishes: points by phase, percent done, dollars so far, ETA, the failures.

    Exit codes: 0 every point succeeded, 1 a point failed, 2 bad input (no such experiment), 130 interrupted.
    On a terminal the view is redrawn in place; piped, a line is printed when something changes (at least once
    a minute).
    """
    backend = choose_backend(root, cluster, namespace, kube_context)
    if backend.kind == "local":
        backend.require_root()
    origin: tuple[float, float] | None = None

    def look() -> Snapshot:
        nonlocal origin
        if backend.kind == "cluster":
            return cluster_snapshot(backend, experiment)
        now = time.monotonic()
        snapshot, fraction = local_snapshot(backend.root, experiment, origin, now)
        origin = origin or (now, fraction)
        return snapshot

    def show(snapshot: Snapshot) -> str:
        if output == "json":
            return json.dumps(snapshot.to_dict(), ensure_ascii=False)
        return "\n".join(snapshot.lines())

    snapshot = look()
    if once:
        click.echo(show(snapshot))
        sys.exit(snapshot.exit_code)
    try:
        if sys.stdout.isatty() and output == "text":
            snapshot = _follow_live(look, snapshot, interval)
        else:
            snapshot = _follow_plain(look, snapshot, interval, show)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(snapshot.exit_code)


def _follow_plain(look: Any, snapshot: Snapshot, interval: float, show: Any) -> Snapshot:
    last_text, last_time = "", -QUIET_LINE_S
    while True:
        text = show(snapshot)
        if text != last_text or time.monotonic() - last_time >= QUIET_LINE_S:
            click.echo(text)
            last_text, last_time = text, time.monotonic()
        if snapshot.finished:
            return snapshot
        time.sleep(interval)
        snapshot = look()


def _follow_live(look: Any, snapshot: Snapshot, interval: float) -> Snapshot:
    from rich.live import Live
    from rich.text import Text

    from datasweep.cli.common import stdout_console

    with Live(Text("\n".join(snapshot.lines())), console=stdout_console(), auto_refresh=False) as live:
        while not snapshot.finished:
            time.sleep(interval)
            snapshot = look()
            live.update(Text("\n".join(snapshot.lines())), refresh=True)
    return snapshot
