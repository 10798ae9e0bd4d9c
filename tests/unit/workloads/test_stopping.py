"""Every worker ends cleanly on SIGTERM (workloads/stopping.py): `datasweep worker` installs the handler, which
raises Stopped (exit 143) so that `finally` blocks run. The generate worker: generate/test_generate_stop.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.workloads import stopping

PROGRAM = """
import sys, time
from datasweep.workloads.stopping import raise_on_sigterm
raise_on_sigterm()
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    open(sys.argv[1], "w").write("cleaned up")
"""


def test_sigterm_ends_a_worker_with_143_after_its_finally_blocks(tmp_path: Path) -> None:
    marker = tmp_path / "cleanup"
    process = subprocess.Popen([sys.executable, "-c", PROGRAM, str(marker)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 143
    assert time.monotonic() - started < 10
    assert marker.read_text() == "cleaned up"


def test_the_worker_group_installs_the_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    try:
        CliRunner().invoke(cli, ["worker", "dataset"])
        assert signal.getsignal(signal.SIGTERM) is stopping._raise
    finally:
        signal.signal(signal.SIGTERM, before)
