"""`datasweep run`: the Experiment's plan on one machine, workers as subprocesses, the SPEC section 5 layout.

The same planner and fingerprints as the operator; the registry under `<root>/.datasweep/` stands in for
the Artifact and Batch objects. A stage is done exactly when its `manifest.json` exists, so an interrupted
run resumes where it stopped (the workers themselves skip records already written).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from datasweep.api.batch import BatchPoint
from datasweep.api.worker import dump_worker_spec
from datasweep.core.imported import ImportedMatch, find_match
from datasweep.core.plan import Plan, StagePlan
from datasweep.core.worker_spec import worker_spec_for
from datasweep.local.experiment_file import ExperimentFileError, LocalExperiment
from datasweep.local.registry import LocalArtifact, Registry
from datasweep.store.atomic import atomic_write_text
from datasweep.store.layout import (
    LayoutError,
    claim_generate_dir,
    find_generate_dir,
    is_complete,
    link_into_batch,
    set_aside,
    supersede,
    training_relpath,
)
from datasweep.store.manifest import read_manifest
from datasweep.store.progress import REQUEST_REUSE_KEY, RequestReuseCounts
from datasweep.store.verify import check_artifact, set_damaged_aside

DEFAULT_ROOT = Path("Data_v2/synthetic")
DEFAULT_WORKER_COMMAND = (sys.executable, "-m", "datasweep", "worker")
LOG_TAIL_LINES = 15
# how the workers and Python start an error message: `error: ...`, `Error: ...`, a traceback
ERROR_START = re.compile(r"^(error|Error|ERROR|Traceback \(most recent call last\))\b")

TaskState = Literal["pending", "running", "done", "failed", "blocked"]


@dataclass
class StageTask:
    plan: StagePlan
    relpath: str
    directory: Path
    spec_path: Path
    depends_on: StageTask | None
    reused: bool
    state: TaskState = "pending"
    log: Path | None = None
    returncode: int | None = None
    process: subprocess.Popen[bytes] | None = None
    message: str = ""

    @property
    def label(self) -> str:
        return f"{self.plan.stage} {self.plan.dataset}/{self.plan.semantic_name} ({self.plan.artifact})"


@dataclass
class PointRun:
    dataset: str
    semantic_name: str
    generate: StageTask
    training: list[StageTask]

    @property
    def tasks(self) -> list[StageTask]:
        return [self.generate, *self.training]

    @property
    def reused(self) -> bool:
        return all(task.reused for task in self.tasks)


@dataclass
class RunResult:
    experiment: str
    batch: str
    points: list[PointRun]
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> list[StageTask]:
        return [task for point in self.points for task in point.tasks]

    @property
    def failed(self) -> list[StageTask]:
        return [task for task in self.tasks if task.state == "failed"]

    def summary(self) -> str:
        reused = sum(point.reused for point in self.points)
        created = len(self.points) - reused
        stages = self.tasks
        stage_reused = sum(task.reused for task in stages)
        line = f"{len(self.points)} points: {reused} reused, {created} created"
        if len(stages) != len(self.points):
            line += f" ({len(stages)} stages: {stage_reused} reused, {len(stages) - stage_reused} created)"
        stored = self.request_reuse()
        if stored.stored:
            saved = f", ${stored.saved_usd:.4f} saved" if stored.saved_usd else ""
            line += f"; the request store answered {stored.stored:,} of {stored.requests:,} requests{saved}"
        return line

    def request_reuse(self) -> RequestReuseCounts:
        """Request-level reuse of the stages this run produced, from their manifests."""
        total = RequestReuseCounts(saved_usd=0.0)
        for task in self.tasks:
            manifest = read_manifest(task.directory) if task.state == "done" and not task.reused else None
            counts = RequestReuseCounts.from_raw(manifest.extra.get(REQUEST_REUSE_KEY)) if manifest else None
            total = total + counts if counts is not None else total
        return total


def claim_is_dead(artifact: LocalArtifact) -> bool:
    """Failed, or claimed and never started (no attempt): nothing there is worth keeping a name or a view for."""
    return artifact.phase == "Failed" or (artifact.phase == "Pending" and artifact.attempts == 0)


def imported_match(registry: Registry, root: Path, stage: StagePlan, dataset_sha256: str) -> ImportedMatch | None:
    """An imported seed-format directory holding exactly what a generate point asks for (`datasweep import
    --source`), used when the point's own fingerprint has no complete directory."""
    if stage.stage != "generate":
        return None
    candidates = [
        a
        for a in registry.artifacts()
        if a.imported and a.stage == "generate" and a.phase == "Ready" and is_complete(root / a.path)
    ]
    return find_match(stage.params, stage.dataset, dataset_sha256, candidates) if candidates else None


def parse_worker_command(value: str | None) -> tuple[str, ...]:
    """`--worker-command "srun -n1 python -m datasweep worker"`: the prefix before `<stage> --spec FILE`."""
    return tuple(shlex.split(value)) if value else DEFAULT_WORKER_COMMAND


class _Interrupted(Exception):
    pass


@contextmanager
def _interrupts_raise() -> Iterator[None]:
    """SIGINT and SIGTERM both stop the run cleanly (workers are stopped, finished stages are kept)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class LocalRunner:
    def __init__(
        self,
        root: Path,
        *,
        jobs: int = 1,
        worker_command: tuple[str, ...] = DEFAULT_WORKER_COMMAND,
        console: Console | None = None,
        force_regenerate: bool = False,
        stop_grace_s: float = 15.0,
        poll_interval_s: float = 0.1,
    ) -> None:
        self.root = root.resolve()
        self.jobs = max(1, jobs)
        self.worker_command = worker_command
        self.console = console or Console(stderr=True)
        self.force_regenerate = force_regenerate
        self.stop_grace_s = stop_grace_s
        self.poll_interval_s = poll_interval_s
        self.registry = Registry(self.root)

    # ---- preparing: claims, specs, registry, batch views ----
    def prepare(self, experiment: LocalExperiment, plan: Plan) -> RunResult:
        force = self.force_regenerate or experiment.spec.force_regenerate
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        result = RunResult(experiment=experiment.name, batch=plan.batch, points=[], notes=list(experiment.notes))
        # Model paths are checked before anything is claimed: bad input must leave no directory or record.
        for point in plan.points:
            for stage in point.stages:
                experiment.stage_model_dir(stage)
        self.root.mkdir(parents=True, exist_ok=True)
        for point in plan.points:
            gen = point.generate
            own = find_generate_dir(self.root, gen.dataset, gen.semantic_name, gen.fingerprint)
            imported = None
            if not force and (own is None or not is_complete(self.root / own)):
                imported = imported_match(self.registry, self.root, gen, experiment.datasets[gen.dataset].sha256)
            try:
                if imported is not None:
                    # the point's data stage is the imported artifact: its record gains this consumer
                    gen_rel = imported.path
                    result.notes.append(f"{gen.artifact}: reusing {imported.describe()}")
                    gen = dataclasses.replace(gen, artifact=imported.artifact)
                else:
                    gen_rel = claim_generate_dir(
                        self.root,
                        gen.dataset,
                        gen.semantic_name,
                        gen.fingerprint,
                        reclaim=lambda rel, held: self._reclaim(rel, held, result.notes),
                    )
                if force and supersede(self.root, gen_rel, stamp) is not None:
                    result.notes.append(f"forceRegenerate: {gen_rel} moved aside (kept until `datasweep gc`)")
            except (LayoutError, OSError) as exc:
                raise ExperimentFileError(f"{self.root}: cannot claim a directory for {gen.artifact}: {exc}") from exc
            if imported is None:
                self._set_aside_if_damaged(gen, gen_rel, result.notes)
            generate_task = self._task(experiment, plan, gen, gen_rel, None)
            training_tasks = []
            for stage in point.training:
                rel = training_relpath(gen_rel, stage.stage, stage.fingerprint)
                if force:
                    supersede(self.root, rel, stamp)
                self._set_aside_if_damaged(stage, rel, result.notes)
                training_tasks.append(self._task(experiment, plan, stage, rel, generate_task))
            try:
                link_into_batch(self.root, plan.batch, gen.dataset, gen_rel)
            except LayoutError as exc:
                raise ExperimentFileError(str(exc)) from exc
            result.points.append(PointRun(gen.dataset, gen.semantic_name, generate_task, training_tasks))
        self._record_batch(experiment, result)
        return result

    def _reclaim(self, relpath: str, held: str, notes: list[str]) -> bool:
        """A claim whose every attempt failed, or that never started, does not keep the clean name: it is set
        aside (`.<name>.abandoned-<fp>`, with its records, for `datasweep gc`) and the new fingerprint takes it.
        """
        with self.registry.locked():
            records = [a for a in self.registry.artifacts() if a.path == relpath or a.path.startswith(relpath + "/")]
            owner = next((a for a in records if a.path == relpath and a.fingerprint == held), None)
            if owner is None or not claim_is_dead(owner):
                return False
            aside = set_aside(self.root, relpath)
            for record in records:
                self.registry.put_artifact(record.model_copy(update={"path": aside + record.path[len(relpath) :]}))
        notes.append(f"{relpath} held {owner.name} ({owner.phase}, never completed): moved to {aside}")
        return True

    def _set_aside_if_damaged(self, stage: StagePlan, relpath: str, notes: list[str]) -> None:
        """Check a complete directory before reusing it (its manifest's files exist with their sizes): a damaged
        one is moved aside (`.<name>.damaged-<attempt>`, kept until `datasweep gc`) and produced again."""
        directory = self.root / relpath
        if not is_complete(directory):
            return
        damage = check_artifact(directory)
        if not damage:
            return
        record = self.registry.get_artifact(stage.artifact)
        trained = (directory / "train").is_dir() and any((directory / "train").iterdir())
        aside = set_damaged_aside(self.root, relpath, record.attempts if record else 0)
        also = " with its training stages (made from the damaged data)" if trained and stage.stage == "generate" else ""
        notes.append(
            f"{stage.artifact}: not reused, {damage.summary}: producing it again; the damaged directory is kept "
            f"as {aside}{also} until `datasweep gc`"
        )

    def _task(
        self,
        experiment: LocalExperiment,
        plan: Plan,
        stage: StagePlan,
        relpath: str,
        parent: StageTask | None,
    ) -> StageTask:
        directory = self.root / relpath
        directory.mkdir(parents=True, exist_ok=True)
        reused = is_complete(directory)
        spec = worker_spec_for(
            stage,
            data_root=str(self.root),
            relpath=relpath,
            input_relpaths={"data": parent.relpath} if parent else None,
            source_dir=str(experiment.datasets[stage.dataset].directory.resolve()) if parent is None else None,
            base_model=experiment.stage_model_dir(stage),
            batch=plan.batch,
            experiment=experiment.name,
        )
        spec_path = self.registry.specs_dir / f"{stage.artifact}.yaml"
        atomic_write_text(spec_path, dump_worker_spec(spec))
        record = self.registry.record_consumer(
            LocalArtifact(
                name=stage.artifact,
                stage=stage.stage,
                dataset=stage.dataset,
                semantic_name=stage.semantic_name,
                fingerprint=stage.fingerprint,
                path=relpath,
                params=stage.canonical,
                dataset_files=experiment.datasets[stage.dataset].file_sha256 if parent is None else {},
                inputs=list(stage.inputs),
            ),
            plan.batch,
            experiment.name,
        )
        if reused and record.phase != "Ready":
            self._mark_ready(stage.artifact, directory)
        elif not reused and record.phase == "Ready":
            self.registry.update_artifact(stage.artifact, phase="Pending", manifest=None, completed_at=None)
        state: TaskState = "done" if reused else "pending"
        return StageTask(stage, relpath, directory, spec_path, parent, reused, state=state)

    def _record_batch(self, experiment: LocalExperiment, result: RunResult) -> None:
        points = []
        for point in result.points:
            gen = point.generate
            record = self.registry.get_artifact(gen.plan.artifact)
            points.append(
                BatchPoint(
                    experiment=experiment.name,
                    dataset=point.dataset,
                    semantic_name=point.semantic_name,
                    artifact=gen.plan.artifact,
                    reused=record is not None
                    and (record.first_batch != result.batch or record.first_experiment != experiment.name),
                    path=f"{result.batch}/{point.dataset}/{Path(gen.relpath).name}",
                    ready=all(is_complete(task.directory) for task in point.tasks),
                    training=[task.plan.artifact for task in point.training],
                )
            )
        self.registry.record_batch_points(
            result.batch,
            experiment.name,
            points,
            purpose=experiment.spec.purpose or "",
            description=experiment.spec.description,
        )

    def _mark_ready(self, artifact: str, directory: Path) -> None:
        manifest = read_manifest(directory)
        if manifest is None:
            return
        self.registry.update_artifact(
            artifact,
            phase="Ready",
            usage=manifest.usage,
            manifest=manifest.summary(),
            completed_at=manifest.completed_at,
        )

    # ---- executing ----
    def execute(self, experiment: LocalExperiment, result: RunResult) -> RunResult:
        todo = [task for task in result.tasks if task.state == "pending"]
        with self._progress(result) as advance, _interrupts_raise():
            try:
                self._schedule(todo, advance)
            except (_Interrupted, KeyboardInterrupt):
                result.interrupted = True
                self._stop_all([task for task in todo if task.state == "running"])
        self._record_batch(experiment, result)
        return result

    def _schedule(self, todo: list[StageTask], advance: Callable[[StageTask | None], None]) -> None:
        running: list[StageTask] = []
        while True:
            for task in todo:
                parent = task.depends_on
                if task.state == "pending" and parent is not None and parent.state in ("failed", "blocked"):
                    task.state = "blocked"
                    task.message = f"not run: its input {parent.plan.artifact} failed"
            ready = [t for t in todo if t.state == "pending" and (t.depends_on is None or t.depends_on.state == "done")]
            while ready and len(running) < self.jobs:
                task = ready.pop(0)
                self._start(task)
                running.append(task)
            if not running:
                return
            time.sleep(self.poll_interval_s)
            advance(None)  # the running workers' latest progress lines
            for task in list(running):
                assert task.process is not None
                code = task.process.poll()
                if code is None:
                    continue
                running.remove(task)
                self._finish(task, code)
                advance(task)

    def _start(self, task: StageTask) -> None:
        log = self.registry.next_log(task.plan.artifact)
        task.log = log
        record = self.registry.get_artifact(task.plan.artifact)
        self.registry.update_artifact(
            task.plan.artifact, phase="Running", attempts=(record.attempts if record else 0) + 1
        )
        env = dict(os.environ)
        env["DATASWEEP_TERMINATION_LOG"] = os.devnull  # no pod here: the manifest on disk is the record
        command = [*self.worker_command, task.plan.stage, "--spec", str(task.spec_path)]
        with log.open("wb") as handle:
            handle.write(f"$ {shlex.join(command)}\n".encode())
            handle.flush()
            task.process = subprocess.Popen(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the runner, which stops workers in order
            )
        task.state = "running"

    def _finish(self, task: StageTask, code: int) -> None:
        task.returncode = code
        task.process = None
        if code == 0 and is_complete(task.directory):
            task.state = "done"
            self._mark_ready(task.plan.artifact, task.directory)
            return
        task.state = "failed"
        if code == 0:
            task.message = f"the worker exited 0 but wrote no manifest.json in {task.directory}"
        else:
            task.message = f"the worker exited with code {code}"
        self.registry.update_artifact(task.plan.artifact, phase="Failed")

    def _stop_all(self, running: list[StageTask]) -> None:
        """SIGINT to each worker's process group, then SIGTERM, then SIGKILL; unfinished stages stay Pending."""
        for sig, wait_s in ((signal.SIGINT, self.stop_grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            alive = [t for t in running if t.process is not None and t.process.poll() is None]
            if not alive:
                break
            for task in alive:
                assert task.process is not None
                with suppress(ProcessLookupError):
                    os.killpg(task.process.pid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(
                t.process is not None and t.process.poll() is None for t in alive
            ):
                time.sleep(0.05)
        for task in running:
            if task.process is not None:
                task.process.wait()
                task.process = None
            complete = is_complete(task.directory)
            task.state = "done" if complete else "pending"
            task.message = "" if complete else "interrupted: a rerun resumes it"
            if complete:
                self._mark_ready(task.plan.artifact, task.directory)
            else:
                self.registry.update_artifact(task.plan.artifact, phase="Pending")

    @contextmanager
    def _progress(self, result: RunResult) -> Iterator[Callable[[StageTask | None], None]]:
        """One bar per stage kind on a terminal, with the latest progress line of a running worker of that kind
        (requests, tokens, cost; steps, loss, ETA); elsewhere one line per finished stage and each new progress
        line of a worker (the workers write one every $DATASWEEP_PROGRESS_INTERVAL seconds)."""
        kinds: dict[str, list[StageTask]] = {}
        for task in result.tasks:
            kinds.setdefault(task.plan.stage, []).append(task)
        seen: dict[str, str] = {}
        last_read = [0.0]

        def new_progress_lines() -> list[tuple[StageTask, str]]:
            if time.monotonic() - last_read[0] < 1.0:
                return []
            last_read[0] = time.monotonic()
            found = []
            for task in result.tasks:
                if task.state == "running" and (line := last_progress_line(task.log)) and seen.get(task.label) != line:
                    seen[task.label] = line
                    found.append((task, line))
            return found

        if not self.console.is_terminal:
            # Every progress line a worker wrote (read on from where the last read stopped), not a sample of the
            # latest: a phase that ends between two reads still shows its last line (e.g. 28/28 requests).
            offsets: dict[str, int] = {}

            def print_new_lines(task: StageTask) -> None:
                lines, offsets[task.label] = progress_lines_after(task.log, offsets.get(task.label, 0))
                for line in lines:
                    self.console.print(f"  {task.plan.artifact}: {line}", highlight=False, markup=False)

            def report(task: StageTask | None) -> None:
                if task is None:
                    if time.monotonic() - last_read[0] >= 1.0:
                        last_read[0] = time.monotonic()
                        for running in result.tasks:
                            if running.state == "running":
                                print_new_lines(running)
                    return
                print_new_lines(task)
                word = "done" if task.state == "done" else "FAILED"
                self.console.print(f"{word}: {task.label}", highlight=False)

            yield report
            return
        progress = Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
        )
        bars: dict[str, TaskID] = {}
        with progress:
            for kind, tasks in kinds.items():
                reused = sum(task.reused for task in tasks)
                bars[kind] = progress.add_task(
                    f"{kind} ({reused} reused)", total=len(tasks), completed=reused, status=""
                )

            def advance(task: StageTask | None) -> None:
                if task is None:
                    for running, line in new_progress_lines():
                        progress.update(bars[running.plan.stage], status=line)
                    return
                progress.advance(bars[task.plan.stage])

            yield advance


PROGRESS_LINE = re.compile(r"^[a-z-]+: \d+/\d+ \w+ \(")


def last_progress_line(log: Path | None) -> str | None:
    """The latest progress line (`generate: 120/1440 requests (...)`) in a worker's log, read from its end."""
    if log is None:
        return None
    try:
        with log.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return next((line for line in reversed(lines) if PROGRESS_LINE.match(line)), None)


def progress_lines_after(log: Path | None, offset: int) -> tuple[list[str], int]:
    """The progress lines a worker's log gained after byte `offset` (whole lines only), and where they end."""
    if log is None:
        return [], offset
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    lines = data[:end].decode("utf-8", errors="replace").splitlines()
    return [line for line in lines if PROGRESS_LINE.match(line)], offset + end


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The end of a worker's log: from the line that starts its error message (so a multi-line message
    keeps its head), else the last `lines` lines."""
    if path is None or not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    window = text[-4 * lines :]
    starts = [i for i, line in enumerate(window) if ERROR_START.match(line)]
    if starts and len(window) - starts[-1] <= 4 * lines:
        return "\n".join(window[starts[-1] :])
    return "\n".join(text[-lines:])
