"""`datasweep retry EXPERIMENT`: run every failed point of a sweep again, at once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from datasweep import GROUP, VERSION
from datasweep.cli.backends import ClusterBackend
from datasweep.cli.common import BadInput, backend_options, choose_backend, print_table, stderr_console
from datasweep.k8s import labels

# Failed for one of its inputs: it starts again by itself once that input is Ready (the input is retried).
INPUT_FAILED = "InputFailed"


def failure_of(artifact: dict[str, Any]) -> tuple[str, str]:
    """(reason, message) of the Ready condition."""
    conditions = (artifact.get("status") or {}).get("conditions") or []
    ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    return str(ready.get("reason") or "Failed"), str(ready.get("message") or "")


@click.command("retry")
@click.argument("experiment")
@click.option("--failed", is_flag=True, help="retry the failed Artifacts (the default and, for now, the only choice)")
@backend_options
def retry(
    experiment: str,
    failed: bool,
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
) -> None:
    """Retry every failed point of EXPERIMENT on the cluster: the Experiment gets the annotation
    datasweep.io/retry=<new value>, and the operator gives each failed Artifact it consumes one more attempt; one
    failed for its input starts again once that input is Ready. Correct the cause first: `kubectl apply` of the
    fixed Experiment gives its Artifacts that are not Ready the corrected settings and relaunches the Failed ones
    by itself; retry is for causes outside the Experiment (a Secret, a quota, the endpoint).
    """
    backend = choose_backend(root, cluster, namespace, kube_context)
    if not isinstance(backend, ClusterBackend):
        raise BadInput(
            "retry works on a cluster (--cluster, or a kubeconfig); locally run the experiment file again: "
            "`datasweep run EXPERIMENT_FILE` reruns only the failed and missing stages and reuses the rest"
        )
    from kubernetes.client.exceptions import ApiException

    try:
        backend.api.get_namespaced_custom_object(GROUP, VERSION, backend.namespace, "experiments", experiment)
    except ApiException as exc:
        if exc.status == 404:
            raise BadInput(
                f"no Experiment {experiment!r} in {backend.location}; list them with `kubectl get experiments "
                f"-n {backend.namespace}` (or pass -n NAMESPACE)"
            ) from exc
        raise BadInput(f"reading Experiment {experiment} in {backend.location}: {exc.status} {exc.reason}") from exc
    selector = f"{labels.experiment_key(experiment)}=true"
    artifacts = backend._list("artifacts", label_selector=selector)
    failed_now = [a for a in artifacts if (a.get("status") or {}).get("phase") == "Failed"]
    console = stderr_console()
    if not failed_now:
        console.print(f"Experiment {experiment} has no failed Artifacts ({len(artifacts)} in all): nothing to retry")
        return
    token = "cli-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    try:  # the operator retries them (researchers may patch Experiments, not Artifacts: docs/deploy.md)
        backend.api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            backend.namespace,
            "experiments",
            experiment,
            {"metadata": {"annotations": {labels.RETRY: token}}},
        )
    except ApiException as exc:
        raise BadInput(
            f"annotating Experiment {experiment} in {backend.location}: {exc.status} {exc.reason}"
            + ("; you need `patch` on experiments.datasweep.io there" if exc.status == 403 else "")
        ) from exc
    rows, retried, waiting = [], 0, 0
    for artifact in sorted(failed_now, key=lambda a: str(a["metadata"]["name"])):
        reason, message = failure_of(artifact)
        waits = reason == INPUT_FAILED
        waiting += waits
        retried += not waits
        action = "starts when its input is Ready" if waits else "retried"
        name = artifact["metadata"]["name"]
        rows.append((name, (artifact.get("spec") or {}).get("stage", ""), reason, action, message[:120]))
    print_table(
        f"Experiment {experiment}: failed Artifacts",
        ("ARTIFACT", "STAGE", "REASON", "ACTION", "MESSAGE"),
        rows,
        name_column="ARTIFACT",
    )
    console.print(
        f"asked the operator to retry {retried} failed Artifact(s) of Experiment {experiment} "
        f"({labels.RETRY}={token} on the Experiment; its Event Retry says what was done)"
        + (f"; {waiting} failed for an input and start again once it is Ready" if waiting else "")
        + f"; follow with `kubectl get art -n {backend.namespace} -l {selector} -w`",
        markup=False,
    )
