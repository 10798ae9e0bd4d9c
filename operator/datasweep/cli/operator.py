"""`datasweep operator`: run the Kopf operator (what the chart's Deployment runs)."""

from __future__ import annotations

import asyncio
import os

import click


@click.command("operator")
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Namespace to watch (repeatable)")
@click.option("-A", "--all-namespaces", "clusterwide", is_flag=True, help="Watch every namespace")
@click.option("--liveness", default=None, help="Health endpoint, e.g. http://0.0.0.0:8080/healthz")
@click.option("--config", "config_path", default=None, help="Operator config YAML (default: $DATASWEEP_CONFIG)")
@click.option("-v", "--verbose", is_flag=True, help="more lines: every handler run and object change (DEBUG)")
@click.option("-d", "--debug", is_flag=True, help="DEBUG lines (Kubernetes API calls included)")
@click.option("-q", "--quiet", is_flag=True, help="warnings and errors only")
@click.option(
    "--log-format",
    type=click.Choice(("full", "plain", "json")),
    default="full",
    show_default=True,
    help="full: timestamp, logger, level; plain: the message; json: one JSON object per line",
)
@click.option("--log-prefix/--no-log-prefix", default=None, help="prefix messages with the object's namespace/name")
@click.option(
    "--peering",
    default=None,
    help="Kopf peering object (KopfPeering) shared by the replicas: one is active, the others stand by. "
    "Without it the operator runs standalone (one replica).",
)
def operator(
    namespaces: tuple[str, ...],
    clusterwide: bool,
    liveness: str | None,
    config_path: str | None,
    verbose: bool,
    debug: bool,
    quiet: bool,
    log_format: str,
    log_prefix: bool | None,
    peering: str | None,
) -> None:
    """Reconcile Experiments, Artifacts and Batches (standalone, or one active replica of several with --peering)."""
    if not namespaces and not clusterwide:
        raise click.UsageError("give --namespace NS (repeatable) or --all-namespaces")
    if config_path:
        os.environ["DATASWEEP_CONFIG"] = config_path
    import kopf

    # the same logging set-up as `kopf run --verbose/--debug/--quiet/--log-format`
    kopf.configure(
        debug=debug,
        verbose=verbose,
        quiet=quiet,
        log_format=kopf.LogFormat[log_format.upper()],
        log_prefix=log_prefix,
    )

    import datasweep.controller  # noqa: F401  (registers the handlers)

    asyncio.run(
        kopf.operator(
            standalone=peering is None,
            peering_name=peering,
            clusterwide=clusterwide,
            namespaces=list(namespaces),
            liveness_endpoint=liveness,
        )
    )
