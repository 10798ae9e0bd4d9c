"""`datasweep` command line: local runs, the operator, the workers and the batch tools."""

from __future__ import annotations

import click

from datasweep import __version__
from datasweep.cli._lazy import LazyGroup

WORKERS = {
    "generate": "datasweep.workloads.generate.cli:main",
    "fomaml": "datasweep.workloads.fomaml.cli:main",
    "moe-steer": "datasweep.workloads.moe_steer.cli:main",
    "qa": "datasweep.workloads.qa.cli:main",
}

COMMANDS: dict[str, str] = {}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="datasweep")
def cli() -> None:
    """Run ML experiment sweeps that never pay twice for the same result."""


@cli.group(cls=LazyGroup, lazy_subcommands=WORKERS)
def worker() -> None:
    """Run one stage's workload (what the operator's Jobs run): datasweep worker STAGE --spec FILE."""


def main() -> None:
    cli(prog_name="datasweep")


if __name__ == "__main__":
    main()
