"""`datasweep verify`: check Ready Artifacts against their manifests (sizes; sha256 with --deep)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from datasweep.cli.backends import ArtifactView, ClusterBackend, LocalBackend
from datasweep.cli.common import (
    EXIT_FAILED,
    BadInput,
    backend_options,
    choose_backend,
    dump,
    output_option,
    print_table,
)
from datasweep.local.experiment_file import ExperimentFileError, read_experiment_object
from datasweep.store.verify import check_artifact


def select(artifacts: list[ArtifactView], target: str | None, everything: bool) -> tuple[str, list[ArtifactView]]:
    """What TARGET names: an Artifact, an experiment file (its metadata.name), or an Experiment (what it uses)."""
    if everything == (target is not None):
        raise BadInput("give one of FILE, EXPERIMENT or ARTIFACT, or --all (every Ready Artifact)")
    if target is None:
        return "every Artifact", artifacts
    named = [a for a in artifacts if a.name == target]
    if named:
        return f"Artifact {target}", named
    experiment = target
    if Path(target).is_file():
        try:
            experiment = read_experiment_object(Path(target))[0]
        except ExperimentFileError as exc:
            raise BadInput(str(exc)) from exc
    used = [a for a in artifacts if experiment in a.consumers or a.first_experiment == experiment]
    if not used:
        raise BadInput(
            f"{target!r}: no Artifact of that name and no experiment {experiment!r} uses one; list them with "
            "`datasweep artifacts`, or pass --all"
        )
    return f"experiment {experiment}", used


def verify_rows(base: Path, artifacts: list[ArtifactView], deep: bool, cluster: bool) -> list[dict[str, Any]]:
    rows = []
    for artifact in artifacts:
        if not artifact.ready:
            continue  # not produced (yet): nothing to hold to a manifest
        # On a cluster where no worker wrote one (kwok, requireManifest off) a Ready Artifact records no manifest.
        damage = check_artifact(
            base / artifact.path, deep=deep, manifest_required=not cluster or artifact.manifest is not None
        )
        rows.append(
            {
                "artifact": artifact.name,
                "stage": artifact.stage,
                "path": artifact.path,
                "status": "DAMAGED" if damage else "OK",
                "problems": list(damage.problems),
            }
        )
    return rows


@click.command("verify")
@click.argument("target", metavar="[FILE|EXPERIMENT|ARTIFACT]", required=False)
@click.option("--all", "everything", is_flag=True, help="every Ready Artifact of the store or namespace")
@click.option("--deep", is_flag=True, help="also hash every file and compare it with the manifest's sha256")
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="cluster backend: where the data volume is mounted on this machine",
)
@backend_options
@output_option
def verify(
    target: str | None,
    everything: bool,
    deep: bool,
    data_root: Path | None,
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    output: str,
) -> None:
    """Check Ready Artifacts against their manifests: every file there with its size (and sha256 with --deep).

    One row per Artifact, OK or DAMAGED with what is wrong; exit code 1 when any is damaged. The operator and
    `datasweep run` make the same size check before they reuse an Artifact, and produce a damaged one again.
    """
    backend = choose_backend(root, cluster, namespace, kube_context)
    if isinstance(backend, LocalBackend):
        backend.require_root()
        base = backend.root
    elif data_root is not None:
        base = data_root
    else:
        raise BadInput("verify on the cluster backend needs --data-root: where the data volume is mounted here")
    what, chosen = select(backend.artifacts(), target, everything)
    rows = verify_rows(base, chosen, deep, isinstance(backend, ClusterBackend))
    damaged = [row for row in rows if row["status"] == "DAMAGED"]
    if output != "table":
        click.echo(dump(rows, output))
    else:
        print_table(
            f"{what}: {len(rows)} Ready, {len(damaged)} damaged ({backend.location}{', sha256' if deep else ''})",
            ("ARTIFACT", "STAGE", "STATUS", "WHAT", "PATH"),
            [(r["artifact"], r["stage"], r["status"], "; ".join(r["problems"]), r["path"]) for r in rows],
            name_column="ARTIFACT",
        )
    skipped = len(chosen) - len(rows)
    if skipped:
        click.echo(f"{skipped} Artifact(s) not Ready: not checked", err=True)
    if damaged:
        click.echo(
            f"{len(damaged)} damaged: the next run or Experiment that uses one produces it again (the damaged "
            "directory is kept as .<name>.damaged-<attempt> until `datasweep gc`)",
            err=True,
        )
        sys.exit(EXIT_FAILED)
