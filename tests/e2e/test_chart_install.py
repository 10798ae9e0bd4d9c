"""The chart against the real control plane: server-side dry-run, `helm install`, and the operator's RBAC.

The RBAC checks impersonate the operator's ServiceAccount (kubectl auth can-i --as system:serviceaccount:...)
to show that everything the operator needs is allowed, and that what it must never do (list Secrets, delete
Artifacts, create Pods, ...) is denied. The Deployment's pod does not run usefully on kwok: the objects count.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "datasweep"

pytestmark = pytest.mark.e2e

# (verb, resource) pairs the operator's ServiceAccount must be allowed in a watched namespace.
ALLOWED = [
    *[
        (verb, f"{kind}.datasweep.io")
        for kind in ("experiments", "batches", "artifacts")
        for verb in ("get", "list", "watch", "create", "patch", "update")
    ],
    *[
        (verb, f"{kind}.datasweep.io/status")
        for kind in ("experiments", "batches", "artifacts")
        for verb in ("get", "patch", "update")
    ],
    ("update", "artifacts.datasweep.io/finalizers"),
    *[(verb, "jobs.batch") for verb in ("get", "list", "watch", "create", "delete", "patch")],
    *[(verb, "pods") for verb in ("get", "list", "watch")],
    *[(verb, "services") for verb in ("get", "list", "watch", "create", "delete")],
    *[(verb, "configmaps") for verb in ("get", "list", "watch")],
    ("get", "secrets"),
    ("create", "events"),
    ("patch", "events"),
    ("create", "events.events.k8s.io"),
]
# Cluster-scoped reads Kopf needs.
ALLOWED_CLUSTER = [
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "namespaces"),
]
# What the operator must never be able to do.
DENIED = [
    ("list", "secrets"),
    ("watch", "secrets"),
    ("create", "secrets"),
    ("delete", "artifacts.datasweep.io"),
    ("delete", "experiments.datasweep.io"),
    ("delete", "batches.datasweep.io"),
    ("create", "configmaps"),
    ("delete", "configmaps"),
    ("update", "configmaps"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "pods/exec"),
    ("update", "jobs.batch"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts/token"),
    ("create", "persistentvolumeclaims"),
    ("create", "trainjobs.trainer.kubeflow.org"),
    ("create", "kopfpeerings.kopf.dev"),
]
DENIED_CLUSTER = [
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "namespaces"),
    ("list", "nodes"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
]


def helm(control_plane: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [str(control_plane.bin("helm")), "--kubeconfig", str(control_plane.kubeconfig), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=control_plane.env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def can_i(control_plane: Any, account: str, verb: str, resource: str, namespace: str | None) -> bool:
    """Asks the API server's authorizer, as `kubectl auth can-i --as ACCOUNT` does, through a SubjectAccessReview.

    The review names group, resource and subresource exactly, so it needs no discovery (TrainJob's CRD is
    not installed here, and `can-i` maps unknown resources to the wrong group).
    """
    name, _, subresource = resource.partition("/")
    plural, _, group = name.partition(".")
    service_account_namespace = account.split(":")[2]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": account,
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{service_account_namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": {
                "verb": verb,
                "group": group,
                "resource": plural,
                "subresource": subresource,
                **({"namespace": namespace} if namespace else {}),
            },
        },
    }
    out = control_plane.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout
    return bool(json.loads(out)["status"].get("allowed", False))


def kubectl_can_i(control_plane: Any, account: str, verb: str, resource: str, namespace: str) -> bool:
    result = control_plane.kubectl("auth", "can-i", verb, resource, "--as", account, "-n", namespace, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {verb} {resource}: {result.stdout}{result.stderr}"
    return answer == "yes"


def rbac_mismatches(
    control_plane: Any,
    account: str,
    namespace: str,
    *,
    allowed: bool,
    pairs: list[tuple[str, str]],
    cluster: bool = False,
) -> list[str]:
    where = None if cluster else namespace
    expected = "allowed" if allowed else "denied"
    return [
        f"{verb} {resource} ({where or 'cluster'}): expected {expected}"
        for verb, resource in pairs
        if can_i(control_plane, account, verb, resource, where) != allowed
    ]


def test_rendered_manifests_pass_server_side_dry_run(control_plane: Any, namespace: str) -> None:
    for values in (
        [],
        [
            "--set",
            "watch.allNamespaces=true",
            "--set",
            "data.existingClaim=shared",
            "--set",
            "trainJob.enabled=true",
            "--set",
            "queueName=team-a",
        ],
    ):
        # no --kube-version: the chart renders without knowing the cluster (GitOps pipelines render it so)
        rendered = helm(control_plane, "template", "datasweep", str(CHART), "--namespace", namespace, *values).stdout
        kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(rendered) if doc)
        assert "Deployment" in kinds
        result = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered)
        assert result.stdout.count("(server dry run)") == len(kinds), result.stdout


def test_helm_install_creates_the_objects_and_grants_exactly_the_operator_rbac(
    control_plane: Any, namespace: str
) -> None:
    installed = helm(
        control_plane, "install", "datasweep", str(CHART), "--namespace", namespace, "--set", "data.size=1Gi"
    )
    assert f"kubectl -n {namespace} rollout status deployment/datasweep" in installed.stdout  # NOTES.txt
    try:
        for kind, name in [
            ("deployment", "datasweep"),
            ("serviceaccount", "datasweep"),
            ("serviceaccount", "datasweep-worker"),
            ("configmap", "datasweep-config"),
            ("persistentvolumeclaim", "datasweep-data"),
            ("role", "datasweep-framework"),
            ("role", "datasweep-application"),
            ("rolebinding", "datasweep-framework"),
            ("rolebinding", "datasweep-application"),
            ("cronjob", "datasweep-request-store-gc"),
        ]:
            control_plane.kubectl("get", kind, name, "-n", namespace)
        control_plane.kubectl("get", "clusterrole", f"{namespace}-datasweep-framework")
        control_plane.kubectl(
            "get", "crd", "experiments.datasweep.io", "artifacts.datasweep.io", "batches.datasweep.io"
        )
        deployment = yaml.safe_load(
            control_plane.kubectl("get", "deployment", "datasweep", "-n", namespace, "-o", "yaml").stdout
        )
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        config = yaml.safe_load(
            control_plane.kubectl(
                "get",
                "configmap",
                "datasweep-config",
                "-n",
                namespace,
                "-o",
                "jsonpath={.data.config\\.yaml}",
            ).stdout
        )
        assert config["dataClaimName"] == "datasweep-data"

        account = f"system:serviceaccount:{namespace}:datasweep"
        problems = [
            *rbac_mismatches(control_plane, account, namespace, allowed=True, pairs=ALLOWED),
            *rbac_mismatches(control_plane, account, namespace, allowed=True, pairs=ALLOWED_CLUSTER, cluster=True),
            *rbac_mismatches(control_plane, account, namespace, allowed=False, pairs=DENIED),
            *rbac_mismatches(control_plane, account, namespace, allowed=False, pairs=DENIED_CLUSTER, cluster=True),
            # Namespace mode: nothing in a namespace the operator does not watch.
            *rbac_mismatches(
                control_plane,
                account,
                "default",
                allowed=False,
                pairs=[("create", "jobs.batch"), ("get", "secrets"), ("list", "artifacts.datasweep.io")],
            ),
        ]
        worker = f"system:serviceaccount:{namespace}:datasweep-worker"
        problems += [
            f"worker: {p}"
            for p in rbac_mismatches(
                control_plane,
                worker,
                namespace,
                allowed=False,
                pairs=[("get", "secrets"), ("list", "pods"), ("get", "artifacts.datasweep.io")],
            )
        ]
        assert not problems, "RBAC differs from the operator's contract:\n" + "\n".join(problems)
        # The same answers through kubectl's own impersonation, for built-in resources.
        assert kubectl_can_i(control_plane, account, "create", "jobs.batch", namespace)
        assert kubectl_can_i(control_plane, account, "get", "secrets", namespace)
        assert not kubectl_can_i(control_plane, account, "list", "secrets", namespace)
        assert not kubectl_can_i(control_plane, account, "create", "pods", namespace)
    finally:
        helm(control_plane, "uninstall", "datasweep", "--namespace", namespace, "--wait", check=False)
    # The data claim outlives the release (helm.sh/resource-policy: keep); the RBAC does not.
    control_plane.kubectl("get", "persistentvolumeclaim", "datasweep-data", "-n", namespace)
    gone = control_plane.kubectl("get", "clusterrole", f"{namespace}-datasweep-framework", check=False)
    assert gone.returncode != 0


def test_cluster_wide_install_grants_every_namespace(control_plane: Any, namespace: str) -> None:
    helm(
        control_plane,
        "install",
        "datasweep",
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "watch.allNamespaces=true",
        "--set",
        "data.existingClaim=shared-nfs",
        "--set",
        "trainJob.enabled=true",
        "--skip-crds",
    )
    try:
        assert control_plane.kubectl("get", "pvc", "-n", namespace, "-o", "name").stdout.strip() == ""
        account = f"system:serviceaccount:{namespace}:datasweep"
        problems = [
            *rbac_mismatches(
                control_plane,
                account,
                "default",
                allowed=True,
                pairs=[
                    ("create", "jobs.batch"),
                    ("patch", "artifacts.datasweep.io/status"),
                    ("create", "events"),
                    ("create", "trainjobs.trainer.kubeflow.org"),
                ],
            ),
            *rbac_mismatches(
                control_plane,
                account,
                "default",
                allowed=False,
                pairs=[("list", "secrets"), ("delete", "artifacts.datasweep.io"), ("create", "pods")],
            ),
        ]
        assert not problems, "\n".join(problems)
    finally:
        helm(control_plane, "uninstall", "datasweep", "--namespace", namespace, "--wait", check=False)


def _service_account_kubeconfig(control_plane: Any, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates with the ServiceAccount's token (what the pod would mount)."""
    admin = yaml.safe_load(control_plane.kubectl("config", "view", "--raw", "--minify").stdout)
    cluster = admin["clusters"][0]["cluster"]
    token = control_plane.kubectl("create", "token", account, "-n", namespace, "--duration", "1h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cp", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "cp", "user": account, "namespace": namespace}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


EXPERIMENT = """
apiVersion: datasweep.io/v1alpha1
kind: Experiment
metadata: {name: copa-temperature}
spec:
  batch: batch_20241229_temperature
  purpose: temperature_study
  datasets:
    - name: Copa
      source: {path: sources/copa}
  generation:
    backend: openai
    apiKeySecret: {name: openai, key: api-key}
    model: gpt-4o
    temperature: [0.5, 0.7]
"""


def test_operator_runs_under_the_chart_service_account(control_plane: Any, namespace: str, tmp_path: Path) -> None:
    """The real operator, authenticated as the chart's ServiceAccount, plans an Experiment without a 403."""
    helm(control_plane, "install", "datasweep", str(CHART), "--namespace", namespace)
    try:
        if control_plane.kubectl("get", "crd", "experiments.datasweep.io", check=False).returncode != 0:
            control_plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        control_plane.kubectl("wait", "--for=condition=Established", "crd/experiments.datasweep.io", "--timeout=60s")
        control_plane.kubectl("create", "secret", "generic", "openai", "-n", namespace, "--from-literal=api-key=x")
        data = tmp_path / "data"
        (data / "sources" / "copa").mkdir(parents=True)
        for split in ("train", "validation", "test"):
            (data / "sources" / "copa" / f"copa_{split}.jsonl").write_text('{"idx": 0, "premise": "p", "text": "t"}\n')
        rendered = helm(control_plane, "get", "manifest", "datasweep", "--namespace", namespace).stdout
        configmap = next(doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "ConfigMap")
        config = yaml.safe_load(configmap["data"]["config.yaml"])
        config["dataRoot"] = str(data)  # where this process sees the data volume
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        kubeconfig = _service_account_kubeconfig(control_plane, namespace, "datasweep", tmp_path / "sa.kubeconfig")
        env = {**control_plane.env, "KUBECONFIG": str(kubeconfig), "DATASWEEP_CONFIG": str(config_path)}
        log_path = tmp_path / "operator.log"
        with log_path.open("w") as log:
            operator = subprocess.Popen(
                [str(Path(sys.executable).parent / "datasweep"), "operator", "--namespace", namespace],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=EXPERIMENT)
            deadline = time.monotonic() + 120
            while True:
                assert operator.poll() is None, f"the operator exited:\n{log_path.read_text()[-3000:]}"
                artifacts = control_plane.kubectl("get", "artifacts", "-n", namespace, "-o", "name").stdout.split()
                jobs = control_plane.kubectl("get", "jobs", "-n", namespace, "-o", "name").stdout.split()
                points = control_plane.kubectl(
                    "get",
                    "experiment",
                    "copa-temperature",
                    "-n",
                    namespace,
                    "-o",
                    "jsonpath={.status.counts.points}",
                ).stdout.strip()
                if len(artifacts) == 2 and len(jobs) == 2 and points == "2":
                    break
                assert time.monotonic() < deadline, (
                    f"no plan in 120s: artifacts={artifacts} jobs={jobs} points={points!r}\n"
                    + log_path.read_text()[-3000:]
                )
                time.sleep(1)
        finally:
            operator.terminate()
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
        log_text = log_path.read_text()
        # A status code, not a timestamp's milliseconds ("09:36:15,403" once matched a plain \b403\b).
        denial = re.compile(r"forbidden|(?:status|code|\()\W{0,3}403\b", re.IGNORECASE)
        forbidden = [line for line in log_text.splitlines() if denial.search(line)]
        assert not forbidden, "the operator hit RBAC denials:\n" + "\n".join(forbidden[:20])
    finally:
        helm(control_plane, "uninstall", "datasweep", "--namespace", namespace, "--wait", check=False)


def test_users_bound_to_edit_or_view_may_use_datasweep(control_plane: Any, namespace: str) -> None:
    """docs/deploy.md's rule on the real authorizer: the chart's aggregated ClusterRoles reach the built-in edit
    and view roles (the cluster's aggregation controller merges them), so a researcher bound to `edit` creates
    Experiments and cannot patch or delete Artifacts; a platform operator bound to the unbound `artifact-admin`
    ClusterRole retries (patch) and deletes them."""
    helm(control_plane, "install", "datasweep", str(CHART), "--namespace", namespace, "--set", "data.size=1Gi")
    try:
        for user, role in (
            ("researcher", "edit"),
            ("reader", "view"),
            ("platform", f"{namespace}-datasweep-artifact-admin"),
        ):
            control_plane.kubectl("create", "serviceaccount", user, "-n", namespace)
            control_plane.kubectl(
                "create",
                "rolebinding",
                user,
                f"--clusterrole={role}",
                f"--serviceaccount={namespace}:{user}",
                "-n",
                namespace,
            )
        researcher = f"system:serviceaccount:{namespace}:researcher"
        reader = f"system:serviceaccount:{namespace}:reader"
        platform = f"system:serviceaccount:{namespace}:platform"
        deadline = time.monotonic() + 60
        while not can_i(control_plane, researcher, "create", "experiments.datasweep.io", namespace):
            assert time.monotonic() < deadline, "the edit role never gained datasweep's rules"
            time.sleep(0.5)
        while not can_i(control_plane, reader, "list", "artifacts.datasweep.io", namespace):
            assert time.monotonic() < deadline, "the view role never gained datasweep's rules"
            time.sleep(0.5)
        expected = {
            researcher: {
                True: [
                    *[(verb, "experiments.datasweep.io") for verb in ("create", "patch", "update", "delete")],
                    *[(verb, f"{kind}.datasweep.io") for kind in ("artifacts", "batches") for verb in ("get", "list")],
                ],
                False: [
                    *[(verb, "artifacts.datasweep.io") for verb in ("create", "patch", "update", "delete")],
                    *[(verb, "batches.datasweep.io") for verb in ("create", "patch", "delete")],
                    ("patch", "artifacts.datasweep.io/status"),
                ],
            },
            reader: {
                True: [("get", "batches.datasweep.io"), ("watch", "experiments.datasweep.io")],
                False: [("create", "experiments.datasweep.io"), ("patch", "artifacts.datasweep.io")],
            },
            platform: {
                True: [("patch", "artifacts.datasweep.io"), ("delete", "artifacts.datasweep.io")],
                False: [("create", "artifacts.datasweep.io"), ("create", "experiments.datasweep.io")],
            },
        }
        problems = [
            f"{account.rsplit(':', 1)[1]}: {p}"
            for account, answers in expected.items()
            for allowed, pairs in answers.items()
            for p in rbac_mismatches(control_plane, account, namespace, allowed=allowed, pairs=pairs)
        ]
        assert not problems, "RBAC differs from docs/deploy.md:\n" + "\n".join(problems)
        # kubectl's own impersonation says the same for the documented pair.
        assert kubectl_can_i(control_plane, researcher, "create", "experiments.datasweep.io", namespace)
        assert not kubectl_can_i(control_plane, researcher, "delete", "artifacts.datasweep.io", namespace)
    finally:
        helm(control_plane, "uninstall", "datasweep", "--namespace", namespace, "--wait", check=False)
