"""`datasweep` command line: local runs, the operator, the workers and the batch tools."""

from __future__ import annotations

import os
import sys

import click

from datasweep import __version__
from datasweep.cli._lazy import LazyGroup

WORKERS = {
    "generate": "datasweep.workloads.generate.cli:main",
    "dataset": "datasweep.workloads.dataset.cli:main",
    "fomaml": "datasweep.workloads.fomaml.cli:main",
    "moe-steer": "datasweep.workloads.moe_steer.cli:main",
    "qa": "datasweep.workloads.qa.cli:main",
}

COMMANDS: dict[str, str] = {
    "operator": "datasweep.cli.operator:operator",
    # local runs, planning and the seed 000 batch tools (issue 8)
    "run": "datasweep.cli.run:run",
    "plan": "datasweep.cli.plan:plan",
    "batches": "datasweep.cli.tools:batches",
    "batch": "datasweep.cli.tools:batch",
    "artifacts": "datasweep.cli.tools:artifacts",
    "compare": "datasweep.cli.tools:compare",
    "paths": "datasweep.cli.tools:paths",
    "resolve": "datasweep.cli.tools:resolve",
    "publish": "datasweep.cli.tools:publish",
    "gc": "datasweep.cli.maintenance:gc",
    "verify": "datasweep.cli.verify:verify",
    "import": "datasweep.cli.maintenance:import_tree",
    "unlink": "datasweep.cli.maintenance:unlink",
    "results": "datasweep.cli.results:results",
    "retry": "datasweep.cli.retry:retry",
    "suspend": "datasweep.cli.suspend:suspend",
    "resume": "datasweep.cli.suspend:resume",
    "watch": "datasweep.cli.watch:watch",
    "why": "datasweep.cli.why:why",
    "completion": "datasweep.cli.completion:completion",
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__)
def cli() -> None:
    """Run ML experiment sweeps that never pay twice for the same result."""


@cli.group(cls=LazyGroup, lazy_subcommands=WORKERS)
def worker() -> None:
    """Run one stage's workload (what the operator's Jobs run): datasweep worker STAGE --spec FILE."""
    from datasweep.workloads.stopping import raise_on_sigterm

    raise_on_sigterm()  # a suspended or deleted Job: end cleanly (workloads/stopping.py), exit 143


def invoked_name(argv0: str) -> str:
    """`kubectl datasweep` when run as the kubectl plugin (kubectl-datasweep), else `datasweep`."""
    base = os.path.basename(argv0)
    plugin = base.startswith(("kubectl-datasweep", "kubectl_datasweep"))
    return "kubectl datasweep" if plugin else "datasweep"


# Flags people put before the command, as with `kubectl -n NS get ...`: `kubectl datasweep -n NS batches`.
GLOBAL_FLAGS_WITH_VALUE = {"-n", "--namespace", "--context", "--root"}
GLOBAL_FLAGS = {"--cluster"}


def hoist_global_flags(args: list[str]) -> list[str]:
    """Move backend flags given before the command name after it: `-n NS batches` -> `batches -n NS`."""
    leading: list[str] = []
    rest = list(args)
    while rest:
        head = rest[0]
        name = head.split("=", 1)[0]
        if name in GLOBAL_FLAGS_WITH_VALUE and "=" not in head and len(rest) > 1:
            leading += rest[:2]
            rest = rest[2:]
        elif name in GLOBAL_FLAGS_WITH_VALUE or head in GLOBAL_FLAGS:
            leading.append(head)
            rest = rest[1:]
        else:
            break
    if not leading or not rest:
        return args
    return [rest[0], *leading, *rest[1:]]


def main() -> None:
    cli(args=hoist_global_flags(sys.argv[1:]), prog_name=invoked_name(sys.argv[0]))


if __name__ == "__main__":
    main()
