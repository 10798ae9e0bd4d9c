"""`datasweep suspend|resume EXPERIMENT`: stop spending on a sweep on the cluster, and pick it up again.

They set the Experiment's `spec.suspend` (the convention of Job, JobSet and Kueue), as `kubectl patch` would; the
operator does the rest (controller/suspension.py). A local run has no suspend: Ctrl-C is its suspend (finished
stages and answered requests are kept) and rerunning the same `datasweep run` resumes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from datasweep import GROUP, VERSION
from datasweep.cli.common import BadInput, Failed, backend_options, choose_backend, stderr_console

LOCAL = (
    "a local run has no suspend: stop `datasweep run` with Ctrl-C (finished stages and answered requests are kept; "
    "the Batch API's batches run on) and rerun the same command to resume. {command} acts on an Experiment on "
    "the cluster: pass --cluster (and -n NAMESPACE)"
)


def set_suspended(
    experiment: str, suspended: bool, root: Path | None, cluster: bool, namespace: str | None, kube_context: str | None
) -> None:
    command = "datasweep suspend" if suspended else "datasweep resume"
    backend = choose_backend(root, cluster, namespace, kube_context)
    if backend.kind == "local":
        raise BadInput(LOCAL.format(command=command))
    from kubernetes.client.exceptions import ApiException

    where = backend.location
    try:
        current: Any = backend.api.get_namespaced_custom_object(
            GROUP, VERSION, backend.namespace, "experiments", experiment
        )
        if bool((current.get("spec") or {}).get("suspend")) == suspended:
            stderr_console().print(f"experiment {experiment} is already {'suspended' if suspended else 'running'}")
            return
        backend.api.patch_namespaced_custom_object(
            GROUP, VERSION, backend.namespace, "experiments", experiment, {"spec": {"suspend": suspended}}
        )
    except ApiException as exc:
        if exc.status == 404:
            raise BadInput(
                f"no Experiment {experiment} in {where}: list them with `kubectl get experiments -n "
                f"{backend.namespace}`, or pass -n NAMESPACE"
            ) from exc
        if exc.status == 403:
            raise BadInput(
                f"{command}: not allowed to patch Experiment {experiment} in {where} ({exc.reason})"
            ) from exc
        raise Failed(f"{command}: {exc.status} {exc.reason} from the cluster ({where})") from exc
    except OSError as exc:
        raise Failed(f"cannot reach the cluster ({exc}); pass --root DIR for a local store") from exc
    if suspended:
        stderr_console().print(
            f"experiment {experiment} suspended: no Job starts for it, and the Jobs of its Artifacts that no running "
            f"Experiment consumes stop (their workers keep what they answered). See them: kubectl get artifacts -n "
            f"{backend.namespace} -l exp.datasweep.io/{experiment}; resume: datasweep resume {experiment}",
            markup=False,
        )
    else:
        stderr_console().print(
            f"experiment {experiment} resumed: its suspended Artifacts start again, each worker from its journal "
            "(what was answered is not paid again)",
            markup=False,
        )


@click.command("suspend")
@click.argument("experiment")
@backend_options
def suspend(experiment: str, root: Path | None, cluster: bool, namespace: str | None, kube_context: str | None) -> None:
    """Suspend EXPERIMENT on the cluster (spec.suspend: true): no Job starts for it, and the Jobs of its Artifacts
    that no running Experiment consumes stop. Artifacts another Experiment still runs for keep running; nothing is
    deleted. Resume with `datasweep resume EXPERIMENT`.

    Locally there is no suspend: Ctrl-C stops `datasweep run`, and rerunning it resumes.
    Exit codes: 0 done, 1 the cluster failed, 2 bad input (no such Experiment, a local store).
    """
    set_suspended(experiment, True, root, cluster, namespace, kube_context)


@click.command("resume")
@click.argument("experiment")
@backend_options
def resume(experiment: str, root: Path | None, cluster: bool, namespace: str | None, kube_context: str | None) -> None:
    """Resume a suspended EXPERIMENT on the cluster (spec.suspend: false): its Artifacts start again, each
    stopped worker resuming from its journal.

    Exit codes: 0 done, 1 the cluster failed, 2 bad input (no such Experiment, a local store).
    """
    set_suspended(experiment, False, root, cluster, namespace, kube_context)
