"""Admission: never above the limits, a freed slot goes to exactly the next in line, a restart counts what runs."""

from __future__ import annotations

import random
import threading

from datasweep.controller.admission import Admission


def test_parallelism_holds_and_a_freed_slot_starts_exactly_the_next() -> None:
    admission = Admission(lambda ns: [])
    granted = [a for a in (f"a{i}" for i in range(10)) if admission.request("ns", "exp", a, 3)]
    assert granted == ["a0", "a1", "a2"]
    assert admission.waiting("ns", "exp") == [f"a{i}" for i in range(3, 10)]
    assert admission.release("ns", "exp", "a1") == [("ns", "exp", "a3")]
    assert admission.running("ns", "exp") == 3
    assert admission.release("ns", "exp", "a3") == [("ns", "exp", "a4")]
    # Asking again while holding a slot (a retried handler) does not take a second one.
    assert admission.request("ns", "exp", "a4", 3)
    assert admission.running("ns", "exp") == 3
    # A newcomer waits behind those already waiting.
    assert not admission.request("ns", "exp", "late", 3)
    assert admission.waiting("ns", "exp")[-1] == "late"


def test_namespace_cap_spans_experiments_and_hands_slots_across() -> None:
    admission = Admission(lambda ns: [], namespace_limit=2)
    assert admission.request("ns", "x", "x0", 10)
    assert admission.request("ns", "y", "y0", 10)
    assert not admission.request("ns", "x", "x1", 10)
    assert not admission.request("ns", "y", "y1", 10)
    assert admission.request("other", "z", "z0", 10)  # another namespace has its own cap
    # y0 finishes: y's own queue first, then the others.
    assert admission.release("ns", "y", "y0") == [("ns", "y", "y1")]
    assert admission.release("ns", "y", "y1") == [("ns", "x", "x1")]


def test_restart_counts_the_jobs_in_flight_from_the_index() -> None:
    admission = Admission(lambda ns: [("exp", "r0"), ("exp", "r1")] if ns == "ns" else [])
    assert not admission.request("ns", "exp", "new", 2)  # two run already (started by the previous process)
    assert admission.release("ns", "exp", "r0") == [("ns", "exp", "new")]
    admission.force("ns", "exp", "adopted")  # a Job found at start-up counts, whatever the limit
    assert admission.running("ns", "exp") == 3


def test_a_restart_whose_first_call_releases_a_seeded_job_frees_its_slot() -> None:
    # CI saw this order: the Job of r0 ended while the operator was down; its event is the first call after
    # the restart, and the index still says r0 runs. Its slot must be free for the three waiting after it.
    admission = Admission(lambda ns: [("exp", "r0")])
    assert admission.release("ns", "exp", "r0") == []
    assert admission.running("ns", "exp") == 0
    assert admission.request("ns", "exp", "a1", 1)
    assert not admission.request("ns", "exp", "a2", 1)
    assert admission.release("ns", "exp", "a1") == [("ns", "exp", "a2")]


def test_a_restart_whose_first_call_forces_an_adopted_job_counts_the_seeded_ones_too() -> None:
    admission = Admission(lambda ns: [("exp", "r0")])
    admission.force("ns", "exp", "adopted")
    assert admission.running("ns", "exp") == 2
    assert admission.release("ns", "exp", "r0") == []
    assert admission.release("ns", "exp", "adopted") == []
    assert admission.running("ns", "exp") == 0


def test_concurrent_requests_and_releases_never_exceed_the_limit() -> None:
    admission = Admission(lambda ns: [], namespace_limit=5)
    limit, lock = 4, threading.Lock()
    running: set[str] = set()
    done: list[str] = []
    threads: list[threading.Thread] = []
    peak = 0

    def start(artifact: str) -> None:
        nonlocal peak
        with lock:
            running.add(artifact)
            peak = max(peak, len(running))
            thread = threading.Thread(target=finish, args=(artifact,))
            threads.append(thread)
        thread.start()

    def finish(artifact: str) -> None:
        with lock:
            running.discard(artifact)
            done.append(artifact)
        for _, _, granted in admission.release("ns", "exp", artifact):
            start(granted)

    names = [f"a{i}" for i in range(200)]
    random.Random(1).shuffle(names)
    for name in names:
        if admission.request("ns", "exp", name, limit):
            start(name)
    joined = 0
    while True:
        with lock:
            pending = threads[joined:]
        if not pending:
            break
        for thread in pending:
            thread.join()
        joined += len(pending)
    assert peak <= limit
    assert sorted(done) == sorted(names)
    assert admission.waiting("ns", "exp") == []
    assert admission.running("ns", "exp") == 0


def test_a_job_created_but_not_recorded_before_a_crash_holds_its_slot_from_the_start() -> None:
    """The last operator created a Job and died before writing phase Running: the restarted one must count
    that Job before it lets anything else in (it is adopted whatever the limit), or the limit is passed."""
    from datasweep.controller.admission import holds_slot
    from datasweep.controller.indices import ArtifactInfo, artifact_info
    from datasweep.core import naming

    def info(name: str, **status: object) -> ArtifactInfo:
        return artifact_info(name, {"metadata": {"name": name}, "spec": {}, "status": status})

    created = {naming.job_name("lost", 1)}  # its second attempt's Job exists

    def exists(job: str) -> bool:
        return job in created

    assert holds_slot(info("running", phase="Running", attempts=1), exists)
    assert holds_slot(info("lost", phase="Waiting", attempts=1), exists)
    assert not holds_slot(info("lost", phase="Waiting", attempts=0), exists)
    assert not holds_slot(info("queued", phase="Waiting", attempts=0), exists)
    assert not holds_slot(info("lost", phase="Ready", attempts=1), exists)
