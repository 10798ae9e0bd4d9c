"""The Helm chart (charts/datasweep) and the images (images/*.Dockerfile), checked without a cluster.

`helm lint` and `helm template` render the chart for the default values, a fully customized values file and
the GitOps example's values; the rendered objects are checked against the operator's contract (RBAC verbs,
Deployment shape, config file). values.schema.json must reject bad values with a message naming the key.
The Dockerfiles' entrypoints run as plain processes through the venv's `datasweep` (no Docker engine here).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import datasweep
from datasweep.api.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "datasweep"
IMAGES = REPO / "images"
GITOPS_VALUES = REPO / "examples" / "gitops" / "platform" / "values.yaml"
NAMESPACE = "datasweep-system"

CONFIG_KEYS = {
    "dataRoot",
    "dataClaimName",
    "volumes",
    "images",
    "jobDefaults",
    "queueName",
    "maxPoints",
    "retries",
    "retryBackoffSeconds",
    "inputWaitTimeoutSeconds",
    "podsNotCreatedTimeoutSeconds",
    "resyncPeriodSeconds",
    "podStuckReportSeconds",
    "podStuckTimeoutSeconds",
    "apiQps",
    "apiBurst",
    "createConcurrency",
    "maxJobsPerNamespace",
    "statusIntervalSeconds",
    "progressIntervalSeconds",
    "progressWritesPerSecond",
    "peeringLifetimeSeconds",
}

# The operator's RBAC contract: (apiGroup, resource) -> verbs. Anything else rendered is a test failure.
FRAMEWORK_CLUSTER_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}
FRAMEWORK_NAMESPACED_RULES = {
    # list, watch: Jobs report pods they cannot create only as FailedCreate Events (PodsNotCreated)
    ("", "events"): {"create", "patch", "list", "watch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
APPLICATION_RULES = {
    **{
        ("datasweep.io", r): {"get", "list", "watch", "create", "patch", "update"}
        for r in ("experiments", "batches", "artifacts")
    },
    **{("datasweep.io", f"{r}/status"): {"get", "patch", "update"} for r in ("experiments", "batches", "artifacts")},
    ("datasweep.io", "artifacts/finalizers"): {"update"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete", "patch"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "services"): {"get", "list", "watch", "create", "delete"},
    ("", "configmaps"): {"get", "list", "watch"},
    ("", "secrets"): {"get"},
}
TRAINJOB_RULES = {("trainer.kubeflow.org", "trainjobs"): {"get", "list", "watch", "create"}}

CUSTOM_VALUES: dict[str, Any] = {
    "image": {
        "repository": "registry.example.com/ml/datasweep-operator",
        "tag": "1.2.3",
        "pullPolicy": "Always",
    },
    "imagePullSecrets": ["regcred"],
    "workerImages": {
        "worker": {"repository": "registry.example.com/ml/worker", "tag": "1.2.3"},
        "trainer": {"repository": "registry.example.com/ml/trainer", "digest": "sha256:" + "a" * 64},
        "pullPolicy": "Always",
    },
    "watch": {"allNamespaces": True},
    "serviceAccount": {
        "name": "sweeper",
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"},
    },
    "workerServiceAccount": {"name": "sweep-worker"},
    "trainJob": {"enabled": True},
    "data": {"existingClaim": "shared-nfs", "dataRoot": "/mnt/data"},
    "sourceVolumes": {"raw-data": "/sources/raw-data", "models": "/sources/models"},
    "jobDefaults": {
        "ttlSecondsAfterFinished": 3600,
        "activeDeadlineSeconds": 7200,
        "nodeSelector": {"pool": "cpu"},
        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        "gpuNodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "gpuTolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "ml-batch",
        "podAnnotations": {"cost-center": "nlp"},
        "sharedMemorySize": "32Gi",
    },
    "queueName": "team-a",
    "maxPoints": 64,
    "retries": 5,
    "retryBackoffSeconds": 30,
    "inputWaitTimeoutSeconds": 600,
    "podStuckTimeoutSeconds": 1800,
    "extraArgs": ["--verbose"],
    "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
    "nodeSelector": {"pool": "system"},
    "tolerations": [{"key": "system", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
    "priorityClassName": "system-cluster-critical",
}


def _find_helm() -> Path | None:
    """The helm that `make controlplane` builds (hack/controlplane.py knows where), else one on PATH."""
    spec = importlib.util.spec_from_file_location("_datasweep_controlplane", REPO / "hack" / "controlplane.py")
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        try:
            spec.loader.exec_module(module)
            built = Path(module.binary_path("helm"))
            if built.is_file():
                return built
        except Exception:  # the harness module is optional for these checks: fall back to PATH
            pass
    found = shutil.which("helm")
    return Path(found) if found else None


HELM = _find_helm()
needs_helm = pytest.mark.skipif(
    HELM is None,
    reason="helm is not built yet: run `make controlplane` (hack/controlplane.py build builds helm)",
)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs helm as CI or a GitOps pipeline would: no cluster, no --kube-version (a helm built from source then
    assumes Kubernetes v1.20, which the chart must render for)."""
    assert HELM is not None
    env = dict(
        os.environ,
        HELM_CACHE_HOME="/tmp/datasweep-helm/cache",
        HELM_CONFIG_HOME="/tmp/datasweep-helm/config",
        HELM_DATA_HOME="/tmp/datasweep-helm/data",
    )
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def render(
    tmp_path: Path, values: dict[str, Any] | None = None, *extra: str, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    args = ["template", "datasweep", str(CHART), "--namespace", namespace]
    if values is not None:
        values_file = tmp_path / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        args += ["-f", str(values_file)]
    out = helm(*args, *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """Flattens a Role's rules to (apiGroup, resource) -> verbs, failing on wildcards and duplicates."""
    flat: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), f"{role['kind']} {role['metadata']['name']}: wildcard in {rule}"
        assert not rule.get("resourceNames")
        assert not rule.get("nonResourceURLs")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) not in flat, f"{(group, resource)} appears twice in {role['metadata']['name']}"
                flat[(group, resource)] = set(rule["verbs"])
    return flat


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


def config_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The rendered operator config; it must load with the operator's own settings model."""
    configmap = one(objects, "ConfigMap", "datasweep-config")
    config = dict(yaml.safe_load(configmap["data"]["config.yaml"]))
    OperatorSettings.model_validate(config)
    return config


@needs_helm
def test_helm_lint_default_custom_and_gitops_values(tmp_path: Path) -> None:
    helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE)
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump(CUSTOM_VALUES))
    helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(custom))
    helm("lint", "--strict", str(CHART), "--namespace", "ml-experiments", "-f", str(GITOPS_VALUES))


@needs_helm
def test_default_render_matches_the_operator_contract(tmp_path: Path) -> None:
    objects = render(tmp_path)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ServiceAccount",
            "ConfigMap",
            "PersistentVolumeClaim",
            "Deployment",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "CronJob",
        ]
    )
    for obj in objects:
        assert obj["metadata"].get("namespace", NAMESPACE) == NAMESPACE

    deployment = one(objects, "Deployment", "datasweep")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "datasweep"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert re.fullmatch(r"[0-9a-f]{64}", spec["template"]["metadata"]["annotations"]["checksum/config"])

    container = operator_container(objects)
    assert container["command"] == ["datasweep"]
    assert container["args"] == [
        "operator",
        "--liveness",
        "http://0.0.0.0:8080/healthz",
        "--namespace",
        NAMESPACE,
    ]
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DATASWEEP_CONFIG"] == "/etc/datasweep/config.yaml"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/etc/datasweep": "config", "/tmp": "tmp", "/data": "data"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tmp"]["emptyDir"]
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "datasweep-data"}
    assert volumes["config"]["configMap"]["name"] == "datasweep-config"

    config = config_of(objects)
    assert set(config) == CONFIG_KEYS
    assert config["dataRoot"] == "/data"
    assert config["dataClaimName"] == "datasweep-data"
    assert config["volumes"] == {}
    assert config["images"] == {
        "worker": f"ghcr.io/datasweep/datasweep-worker:{datasweep.__version__}",
        "trainer": f"ghcr.io/datasweep/datasweep-trainer:{datasweep.__version__}",
        "pullPolicy": "IfNotPresent",
        "pullSecrets": [],
    }
    assert config["jobDefaults"]["serviceAccountName"] == "datasweep-worker"
    assert config["jobDefaults"]["ttlSecondsAfterFinished"] == 86400
    assert config["jobDefaults"]["activeDeadlineSeconds"] == 172800
    assert config["jobDefaults"]["gpuTolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert config["queueName"] is None
    assert (config["maxPoints"], config["retries"], config["retryBackoffSeconds"]) == (256, 2, 10)

    pvc = one(objects, "PersistentVolumeClaim", "datasweep-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert "storageClassName" not in pvc["spec"]  # null: the cluster's default class
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    accounts = {o["metadata"]["name"]: o for o in by_kind(objects, "ServiceAccount")}
    assert set(accounts) == {"datasweep", "datasweep-worker"}
    assert accounts["datasweep-worker"]["automountServiceAccountToken"] is False

    cluster_role = one(objects, "ClusterRole", f"{NAMESPACE}-datasweep-framework")
    assert rules_of(cluster_role) == FRAMEWORK_CLUSTER_RULES
    roles = {o["metadata"]["name"]: o for o in by_kind(objects, "Role")}
    assert rules_of(roles["datasweep-framework"]) == FRAMEWORK_NAMESPACED_RULES
    assert rules_of(roles["datasweep-application"]) == APPLICATION_RULES
    for binding in [*by_kind(objects, "RoleBinding"), *by_kind(objects, "ClusterRoleBinding")]:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "datasweep", "namespace": NAMESPACE}]
        assert binding["roleRef"]["name"] == binding["metadata"]["name"]


@needs_helm
def test_customized_render_cluster_wide_existing_claim_custom_images(tmp_path: Path) -> None:
    objects = render(tmp_path, CUSTOM_VALUES)
    assert not by_kind(objects, "PersistentVolumeClaim"), "an existing claim must not be created again"
    assert not by_kind(objects, "Role")
    assert not by_kind(objects, "RoleBinding")

    container = operator_container(objects)
    assert container["image"] == "registry.example.com/ml/datasweep-operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"] == [
        "operator",
        "--liveness",
        "http://0.0.0.0:8080/healthz",
        "--all-namespaces",
        "--verbose",
    ]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/etc/datasweep", "/tmp", "/mnt/data", "/sources/models", "/sources/raw-data"}
    assert mounts["/sources/raw-data"]["readOnly"] is True
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    assert claims["data"] == "shared-nfs"
    assert sorted(claims.values()) == ["models", "raw-data", "shared-nfs"]
    assert pod["serviceAccountName"] == "sweeper"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["tolerations"] == CUSTOM_VALUES["tolerations"]

    config = config_of(objects)
    assert set(config) == CONFIG_KEYS
    assert config["dataRoot"] == "/mnt/data"
    assert config["dataClaimName"] == "shared-nfs"
    assert config["volumes"] == CUSTOM_VALUES["sourceVolumes"]
    assert config["images"] == {
        "worker": "registry.example.com/ml/worker:1.2.3",
        "trainer": "registry.example.com/ml/trainer@sha256:" + "a" * 64,
        "pullPolicy": "Always",
        "pullSecrets": ["regcred"],
    }
    assert config["jobDefaults"] == {**CUSTOM_VALUES["jobDefaults"], "serviceAccountName": "sweep-worker"}
    assert (config["queueName"], config["maxPoints"], config["retries"]) == ("team-a", 64, 5)
    assert config["retryBackoffSeconds"] == 30
    assert (config["inputWaitTimeoutSeconds"], config["podsNotCreatedTimeoutSeconds"]) == (600, 300)
    assert (config["resyncPeriodSeconds"], config["podStuckReportSeconds"], config["podStuckTimeoutSeconds"]) == (
        30,
        60,
        1800,
    )

    cluster_roles = {o["metadata"]["name"]: o for o in by_kind(objects, "ClusterRole")}
    assert set(cluster_roles) == {
        f"{NAMESPACE}-datasweep-{name}" for name in ("framework", "application", "edit", "view", "artifact-admin")
    }
    framework = rules_of(cluster_roles[f"{NAMESPACE}-datasweep-framework"])
    assert framework == {**FRAMEWORK_CLUSTER_RULES, **FRAMEWORK_NAMESPACED_RULES}
    application = rules_of(cluster_roles[f"{NAMESPACE}-datasweep-application"])
    assert application == {**APPLICATION_RULES, **TRAINJOB_RULES}
    for binding in by_kind(objects, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sweeper", "namespace": NAMESPACE}]

    workers = [o for o in by_kind(objects, "ServiceAccount") if o["metadata"]["name"] == "sweep-worker"]
    assert [w["metadata"]["namespace"] for w in workers] == [NAMESPACE]


@needs_helm
def test_request_store_gc_cronjob_compacts_the_operators_volume_without_api_access(tmp_path: Path) -> None:
    from datasweep.cli.maintenance import REQUEST_STORE_CRONJOB

    objects = render(tmp_path)
    cronjob = one(objects, "CronJob", REQUEST_STORE_CRONJOB.replace("<release>", "datasweep"))
    assert cronjob["spec"]["schedule"] == "17 3 * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False  # no RBAC: it only touches the volume
    assert pod["serviceAccountName"] == "datasweep"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    operator = operator_container(objects)
    assert container["image"] == operator["image"]
    assert container["command"] == ["datasweep"]
    assert container["args"] == ["gc", "--request-store", "--root", "/data", "--keep-recent", "24h", "--yes"]
    assert container["securityContext"] == operator["securityContext"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": "tmp", "/data": "data"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    deployment_volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == deployment_volumes["data"]  # the operator's data volume

    custom = render(tmp_path, {**CUSTOM_VALUES, "requestStoreGc": {"schedule": "@hourly", "keepRecent": "7d"}})
    cronjob = one(custom, "CronJob")
    assert cronjob["spec"]["schedule"] == "@hourly"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][2:6] == ["--root", "/mnt/data", "--keep-recent", "7d"]
    assert pod["containers"][0]["image"] == "registry.example.com/ml/datasweep-operator:1.2.3"
    assert pod["volumes"][1]["persistentVolumeClaim"] == {"claimName": "shared-nfs"}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert not by_kind(render(tmp_path, {"requestStoreGc": {"enabled": False}}), "CronJob")


def test_the_request_store_cronjobs_command_runs(tmp_path: Path) -> None:
    """The chart's command line, as the CronJob runs it, against a volume with a request store."""
    from click.testing import CliRunner

    from datasweep.cli.main import cli
    from datasweep.store.requests import RequestStore, StoredAnswer

    store = RequestStore.under(tmp_path / "_shared")
    store.put([StoredAnswer("a" * 64, "old", answered_at="2020-01-01T00:00:00+00:00"), StoredAnswer("b" * 64, "new")])
    args = ["gc", "--request-store", "--root", str(tmp_path), "--keep-recent", "24h", "--yes"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1 stored answers no Artifact lists" in result.stdout
    assert store.count() == 1


@needs_helm
def test_config_change_changes_the_checksum_annotation(tmp_path: Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = one(render(tmp_path, values), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({}) != checksum({"retries": 3})
    assert checksum({}) == checksum({"resources": {"requests": {"cpu": "1"}}})


@needs_helm
def test_replicas_peer_with_one_active_and_a_disruption_budget(tmp_path: Path) -> None:
    single = render(tmp_path)
    assert not by_kind(single, "PodDisruptionBudget")
    assert not by_kind(single, "KopfPeering")
    assert "--peering" not in operator_container(single)["args"]

    objects = render(tmp_path, {"replicaCount": 2, "watch": {"namespaces": ["team-a", "team-b"]}})
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = operator_container(objects)["args"]
    assert args[args.index("--peering") + 1] == "datasweep"
    peerings = sorted((o["metadata"]["namespace"], o["metadata"]["name"]) for o in by_kind(objects, "KopfPeering"))
    assert peerings == [("team-a", "datasweep"), ("team-b", "datasweep")]
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    for role in (o for o in by_kind(objects, "Role") if o["metadata"]["name"] == "datasweep-framework"):
        rules = {
            (g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
        }
        assert rules[("zalando.org", "kopfpeerings")] == {"get", "list", "watch", "patch"}

    cluster = render(tmp_path, {"replicaCount": 3, "watch": {"allNamespaces": True}})
    assert [o["metadata"]["name"] for o in by_kind(cluster, "ClusterKopfPeering")] == ["datasweep"]
    config = config_of(cluster)
    assert (config["apiQps"], config["apiBurst"], config["maxJobsPerNamespace"]) == (50, 100, 512)
    assert OperatorSettings.model_validate(config).create_concurrency == 8


@needs_helm
def test_namespace_mode_with_several_namespaces(tmp_path: Path) -> None:
    objects = render(tmp_path, {"watch": {"namespaces": ["team-a", "team-b"]}, "queueName": "gpu-queue"})
    container = operator_container(objects)
    assert container["args"][3:] == ["--namespace", "team-a", "--namespace", "team-b"]
    for kind in ("Role", "RoleBinding"):
        placed = sorted((o["metadata"]["namespace"], o["metadata"]["name"]) for o in by_kind(objects, kind))
        assert placed == [
            ("team-a", "datasweep-application"),
            ("team-a", "datasweep-framework"),
            ("team-b", "datasweep-application"),
            ("team-b", "datasweep-framework"),
        ]
    for binding in by_kind(objects, "RoleBinding"):
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    workers = sorted(
        o["metadata"]["namespace"]
        for o in by_kind(objects, "ServiceAccount")
        if o["metadata"]["name"] == "datasweep-worker"
    )
    assert workers == ["team-a", "team-b"]
    assert config_of(objects)["queueName"] == "gpu-queue"


@needs_helm
def test_storage_settings_and_gitops_values(tmp_path: Path) -> None:
    objects = render(
        tmp_path,
        {
            "data": {
                "storageClassName": "nfs-rwx",
                "accessModes": ["ReadWriteOnce"],
                "size": "5Gi",
                "keepOnUninstall": False,
                "claimName": "sweep-data",
            }
        },
    )
    pvc = one(objects, "PersistentVolumeClaim", "sweep-data")
    assert pvc["spec"]["storageClassName"] == "nfs-rwx"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert "helm.sh/resource-policy" not in (pvc["metadata"].get("annotations") or {})
    assert config_of(objects)["dataClaimName"] == "sweep-data"
    # "" means no class at all (static binding to a pre-made PV), which differs from the default class.
    pvc = one(render(tmp_path, {"data": {"storageClassName": ""}}), "PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == ""

    gitops = render(tmp_path, yaml.safe_load(GITOPS_VALUES.read_text()), namespace="ml-experiments")
    assert not by_kind(gitops, "PersistentVolumeClaim")
    assert config_of(gitops)["queueName"] == "ml-team"


BAD_VALUES = [
    (["--set", "scale.apiQps=0"], ["apiQps"]),
    (["--set", "scale.createConcurrency=100"], ["createConcurrency"]),
    (["--set", "replicaCount=-1"], ["replicaCount"]),
    (["--set", "image.pullPolicy=Sometimes"], ["pullPolicy", "Always", "IfNotPresent", "Never"]),
    (["--set", "workerImages.pullPolicy=always"], ["workerImages", "pullPolicy"]),
    (["--set", "retries=-1"], ["retries", "minimum"]),
    (["--set", "maxPoints=0"], ["maxPoints"]),
    (["--set", "replicas=2"], ["replicas", "additional"]),
    (["--set", "data.size=lots"], ["size"]),
    (["--set", "data.accessModes={ReadWriteSometimes}"], ["accessModes"]),
    (["--set", "data.dataRoot=data"], ["dataRoot"]),
    (["--set", "watch.namespaces={Team_A}"], ["namespaces"]),
    (["--set", "runAsUser=0"], ["runAsUser"]),
    (["--set", "healthPort=80"], ["healthPort"]),
    (["--set", "jobDefaults.gpuTolerations[0].operator=Maybe"], ["gpuTolerations", "operator"]),
    (["--set", "workerImages.trainer.digest=sha256:abc"], ["digest"]),
    (["--set", "imagePullSecrets[0].name=regcred"], ["imagePullSecrets"]),
    (["--set", "requestStoreGc.keepRecent=a day"], ["keepRecent"]),
    (["--set", "requestStoreGc.schedule=daily"], ["schedule"]),
    # Cross-field rules: values.schema.json (its message is the rule) and templates/validate.yaml:
    (
        ["--set", "watch.allNamespaces=true", "--set", "watch.namespaces={a}"],
        ["watch.allNamespaces", "choose one"],
    ),
    (["--set", "sourceVolumes.raw-data=/data"], ["sourceVolumes", "raw-data", "reserved"]),
    (["--set", "sourceVolumes.datasweep-data=/sources/x"], ["sourceVolumes", "datasweep-data", "data claim"]),
    (["--set", "serviceAccount.create=false"], ["serviceAccount.name is required"]),
]


@needs_helm
@pytest.mark.parametrize(("args", "expected"), BAD_VALUES, ids=[" ".join(a[1::2]) for a, _ in BAD_VALUES])
def test_bad_values_are_rejected_with_a_message(args: list[str], expected: list[str]) -> None:
    result = helm("template", "datasweep", str(CHART), "--namespace", NAMESPACE, *args, check=False)
    assert result.returncode != 0, f"helm accepted {args}:\n{result.stdout[:400]}"
    for text in expected:
        assert text in result.stderr, f"{text!r} missing from helm's message:\n{result.stderr}"


# Combinations templates/validate.yaml rejects, which values.schema.json states too: `helm lint` runs templates in
# lint mode, where a template `fail` is only an INFO line, so without the schema rule lint passes them.
# (args, the value paths helm's schema error names)
BAD_COMBINATIONS = [
    (["--set", "watch.allNamespaces=true", "--set", "watch.namespaces={a}"], ["watch", "namespaces", "choose one"]),
    (["--set", "serviceAccount.create=false"], ["serviceAccount", "serviceAccount.name is required"]),
    (["--set", "sourceVolumes.raw-data=/data"], ["sourceVolumes", "raw-data", "reserved"]),
    (["--set", "sourceVolumes.raw-data=/etc/datasweep/"], ["sourceVolumes", "raw-data", "reserved"]),
    (["--set", "sourceVolumes.raw-data=/tmp"], ["sourceVolumes", "raw-data", "reserved"]),
    (["--set", "sourceVolumes.datasweep-data=/sources/x"], ["sourceVolumes", "datasweep-data", "data claim"]),
]


@needs_helm
@pytest.mark.parametrize(("args", "expected"), BAD_COMBINATIONS, ids=[" ".join(a[1::2]) for a, _ in BAD_COMBINATIONS])
def test_helm_lint_rejects_what_the_templates_reject(args: list[str], expected: list[str]) -> None:
    linted = helm("lint", str(CHART), "--namespace", NAMESPACE, *args, check=False)
    output = linted.stdout + linted.stderr
    assert linted.returncode != 0, f"helm lint accepted {args}:\n{output}"
    for text in expected:
        assert text in output, f"{text!r} missing from helm lint's message:\n{output}"
    rendered = helm("template", "datasweep", str(CHART), "--namespace", NAMESPACE, *args, check=False)
    assert rendered.returncode != 0, f"helm template accepted {args}"


@needs_helm
def test_template_only_rules_still_stop_template_and_install() -> None:
    """What a schema cannot compare (a source volume over a custom data root or named like a custom claim) the
    templates reject at `helm template`/`install`; lint mode shows the message without failing."""
    for args, message in (
        (["--set", "data.dataRoot=/mnt/data", "--set", "sourceVolumes.raw-data=/mnt/data"], "is taken"),
        (["--set", "data.existingClaim=shared", "--set", "sourceVolumes.shared=/sources/s"], "the data claim"),
    ):
        rendered = helm("template", "datasweep", str(CHART), "--namespace", NAMESPACE, *args, check=False)
        assert rendered.returncode != 0, f"helm template accepted {args}"
        assert message in rendered.stderr, rendered.stderr
        linted = helm("lint", str(CHART), "--namespace", NAMESPACE, *args, check=False)
        assert message in linted.stdout + linted.stderr


def test_schema_is_valid_json_and_covers_every_default_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    missing = sorted(set(values) - set(schema["properties"]))
    assert not missing, f"values.yaml keys without a schema entry: {missing}"


def test_chart_versions_follow_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == datasweep.__version__


# -- images


def _final_stage(dockerfile: Path) -> tuple[list[str], list[str]]:
    """The instructions of the Dockerfile's last stage (continuations joined) and all FROM lines."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    froms = [line for line in lines if line.upper().startswith("FROM ")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:], froms


def _exec_form(stage: list[str], instruction: str) -> list[str]:
    found = [line for line in stage if line.split(None, 1)[0].upper() == instruction]
    if not found:
        return []
    value = json.loads(found[-1].split(None, 1)[1])
    assert isinstance(value, list), f"{instruction} must use the exec (JSON) form"
    return [str(v) for v in value]


DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))


def test_the_three_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == [
        "operator.Dockerfile",
        "trainer.Dockerfile",
        "worker.Dockerfile",
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.stem for p in DOCKERFILES])
def test_dockerfile_is_multi_stage_pinned_non_root_without_secrets(dockerfile: Path) -> None:
    stage, froms = _final_stage(dockerfile)
    text = dockerfile.read_text()
    assert len(froms) >= 2, "multi-stage: build tools stay out of the final image"
    # Base images come from ARGs whose defaults carry an exact version tag (never latest).
    base_args = dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", text, flags=re.MULTILINE))
    assert base_args, "the base image is an ARG with a pinned default"
    for image in base_args.values():
        name, _, tag = image.partition("@")[0].rpartition(":")
        pinned = bool(name) and re.search(r"\d", tag) is not None and tag != "latest"
        assert pinned, f"base image {image} is not pinned to a version"
    for line in froms:
        assert re.fullmatch(r"FROM \$\{\w+_IMAGE\}( AS \w+)?", line), f"unpinned base: {line}"
    users = [line for line in stage if line.upper().startswith("USER ")]
    assert users, "the final stage sets USER"
    assert users[-1].split()[1] == "10001:10001", "the final stage runs as uid 10001"
    for line in text.splitlines():
        if line.startswith(("ENV", "ARG")):
            assert not re.search(r"(API_KEY|TOKEN|PASSWORD|SECRET)", line, flags=re.IGNORECASE), line
    assert (dockerfile.parent / f"{dockerfile.name}.dockerignore").is_file()


VENV_BIN = Path(sys.executable).parent


def _entrypoint_command(dockerfile: Path) -> list[str]:
    stage, _ = _final_stage(dockerfile)
    command = _exec_form(stage, "ENTRYPOINT") + _exec_form(stage, "CMD")
    assert command[:1] == ["datasweep"], f"{dockerfile.name}: the entrypoint is the datasweep CLI"
    return [str(VENV_BIN / "datasweep"), *command[1:], "--help"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.stem for p in DOCKERFILES])
def test_image_entrypoint_runs_as_a_plain_process(dockerfile: Path) -> None:
    command = _entrypoint_command(dockerfile)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1")
    )
    assert result.returncode == 0, f"{shlex.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    assert "Usage:" in result.stdout


def _worker_modules() -> Iterator[str]:
    from datasweep.cli.main import WORKERS

    for target in WORKERS.values():
        yield target.split(":")[0].rsplit(".", 1)[0]


@pytest.mark.parametrize("module", sorted(_worker_modules()))
def test_trainer_torchrun_module_form_runs(module: str) -> None:
    """The CUDA image's multi-node command is `torchrun ... -m datasweep.workloads.<stage> --spec FILE`."""
    if importlib.util.find_spec(module) is None or importlib.util.find_spec(f"{module}.__main__") is None:
        pytest.skip(f"{module} (with __main__) is not in the package yet: its workload issue adds it")
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 0, result.stderr
    assert "--spec" in result.stdout
    assert (VENV_BIN / "torchrun").is_file(), "torchrun comes with torch (the [train] extra)"


def test_chart_ships_the_generated_crds() -> None:
    """charts/datasweep/crds is the generator's copy of crds/ (`make crds` writes both)."""
    generated = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert generated, "crds/ is empty: run `make crds`"
    chart_crds = CHART / "crds"
    shipped = sorted(p.name for p in chart_crds.glob("*.yaml")) if chart_crds.is_dir() else []
    assert shipped == generated, "charts/datasweep/crds differs from crds/: run `make crds`"
    for name in generated:
        assert (chart_crds / name).read_text() == (REPO / "crds" / name).read_text(), f"{name} is stale: make crds"


READ = {"get", "list", "watch"}


@needs_helm
def test_users_with_edit_or_view_can_use_datasweep(tmp_path: Path) -> None:
    """Aggregated ClusterRoles: `edit`/`admin` write Experiments and only read Artifacts and Batches; `view` reads.
    Artifact retry and deletion live in an unbound ClusterRole for platform operators (docs/deploy.md)."""
    objects = render(tmp_path)
    roles = {o["metadata"]["name"]: o for o in by_kind(objects, "ClusterRole")}
    edit, view = roles[f"{NAMESPACE}-datasweep-edit"], roles[f"{NAMESPACE}-datasweep-view"]
    admin = roles[f"{NAMESPACE}-datasweep-artifact-admin"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert rules_of(edit) == {
        ("datasweep.io", "experiments"): {*READ, "create", "update", "patch", "delete"},
        ("datasweep.io", "artifacts"): READ,
        ("datasweep.io", "batches"): READ,
    }
    assert rules_of(view) == {("datasweep.io", r): READ for r in ("experiments", "artifacts", "batches")}
    assert not [k for k in admin["metadata"]["labels"] if k.startswith("rbac.authorization.k8s.io/aggregate-to")]
    assert rules_of(admin) == {
        ("datasweep.io", "artifacts"): {*READ, "patch", "delete"},
        ("datasweep.io", "batches"): {*READ, "create", "update", "patch", "delete"},
        ("datasweep.io", "experiments"): READ,
    }
    off = render(tmp_path, {"rbac": {"aggregateToDefaultRoles": False, "artifactAdminRole": False}})
    assert sorted(o["metadata"]["name"] for o in by_kind(off, "ClusterRole")) == [f"{NAMESPACE}-datasweep-framework"]
    only_admin = render(tmp_path, {"rbac": {"aggregateToDefaultRoles": False}})
    assert f"{NAMESPACE}-datasweep-artifact-admin" in {
        o["metadata"]["name"] for o in by_kind(only_admin, "ClusterRole")
    }


@needs_helm
def test_renders_with_no_flags_and_checks_the_version_of_a_known_cluster(tmp_path: Path) -> None:
    """`helm template x charts/datasweep` and `helm lint` work with no flags at all (CI, GitOps); the minimum
    Kubernetes version is checked where helm knows the cluster (install/upgrade: `lookup` answers)."""
    plain = helm("template", "x", str(CHART))
    assert "kind: Deployment" in plain.stdout
    helm("lint", str(CHART))
    assert "kubeVersion" not in yaml.safe_load((CHART / "Chart.yaml").read_text())
    # No cluster: any --kube-version renders (a GitOps tool passes its cluster's; the install checks it).
    helm("template", "x", str(CHART), "--kube-version", "1.28.0")
    # A copy whose "is a cluster there" test is always true shows the check and its message.
    copy = tmp_path / "known-cluster"
    shutil.copytree(CHART, copy)
    validate = copy / "templates" / "validate.yaml"
    text = validate.read_text()
    assert text.count('(lookup "v1" "Namespace" "" "kube-system")') == 1
    validate.write_text(text.replace('(lookup "v1" "Namespace" "" "kube-system")', "true"))
    too_old = helm("template", "x", str(copy), "--kube-version", "1.28.9", check=False)
    assert too_old.returncode != 0
    assert "needs Kubernetes 1.29 or newer" in too_old.stderr, too_old.stderr
    assert "v1.28.9" in too_old.stderr, too_old.stderr
    helm("template", "x", str(copy), "--kube-version", "1.29.0")


@needs_helm
def test_notes_and_readme(tmp_path: Path) -> None:
    # `helm template` does not render NOTES.txt: a copy of the chart renders it into a ConfigMap through `tpl`
    copy = tmp_path / "datasweep"
    shutil.copytree(CHART, copy)
    (copy / "notes").mkdir()
    shutil.copy(copy / "templates" / "NOTES.txt", copy / "notes" / "NOTES.txt")
    (copy / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: |\n"
        '{{ tpl (.Files.Get "notes/NOTES.txt") . | indent 4 }}\n'
    )
    rendered = helm(
        "template", "datasweep", str(copy), "--namespace", NAMESPACE, "--show-only", "templates/notes-probe.yaml"
    )
    notes = yaml.safe_load(rendered.stdout)["data"]["notes"]
    assert "kubectl create secret generic openai" in notes
    assert "spec.generation.apiKeySecret" in notes
    assert "kubectl get exp " in notes
    assert f"--clusterrole={NAMESPACE}-datasweep-artifact-admin" in notes


def test_chart_readme_and_experiments_plural_clash_documented() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    for key in (
        "rbac.aggregateToDefaultRoles",
        "rbac.artifactAdminRole",
        "extraArgs",
        "apiKeySecret",
        "kubectl get exp",
    ):
        assert key in readme, key
    crd = yaml.safe_load((CHART / "crds" / "datasweep.io_experiments.yaml").read_text())
    assert crd["spec"]["names"]["shortNames"] == ["exp"]
    assert "datasweep" in crd["spec"]["names"]["categories"]
    assert "Katib" in (REPO / "docs" / "cli.md").read_text(encoding="utf-8")


# -- chart values named in the operator's messages

CHART_VALUE = re.compile(r"chart values? `?([A-Za-z][\w-]*(?:\.(?:[\w-]+|\{\}))*)")


def _strings_of(path: Path) -> Iterator[str]:
    """Every string literal of a Python file, f-strings with `{}` where a value goes (implicitly joined literals are
    one node, so a message split over lines reads whole)."""
    import ast

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
        elif isinstance(node, ast.JoinedStr):
            yield "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


def chart_values_named_in_messages() -> list[tuple[str, str]]:
    """(file, value path) for every `chart value X` the operator's code says."""
    found = []
    for path in sorted((REPO / "operator").rglob("*.py")):
        for text in _strings_of(path):
            found += [(str(path.relative_to(REPO)), name) for name in CHART_VALUE.findall(text)]
    return found


def schema_has(schema: dict[str, Any], dotted: str) -> bool:
    """Whether values.schema.json admits the value path (`{}` or any key under a map such as sourceVolumes)."""
    node = schema
    for part in dotted.split("."):
        properties = node.get("properties") or {}
        if part in properties:
            node = properties[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return False
    return True


def test_every_chart_value_an_operator_message_names_exists() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    named = chart_values_named_in_messages()
    assert ("operator/datasweep/controller/experiment.py", "sourceVolumes.{}") in named, named  # the scan works
    missing = [f"{where}: chart value {name}" for where, name in named if not schema_has(schema, name)]
    assert not missing, "messages name chart values that do not exist:\n" + "\n".join(missing)
    # what the check would have caught
    assert not schema_has(schema, "operator.volumes")
    assert schema_has(schema, "data.dataRoot")
    assert schema_has(schema, "sourceVolumes.raw-data")


@needs_helm
def test_the_values_make_install_uses_render(tmp_path: Path) -> None:
    """hack/install.py's values (our control plane: images on the node, a pre-made PV, the API relay) pass the
    schema and render what a user's cluster would get, plus those three."""
    sys.path.insert(0, str(REPO / "hack"))
    import install

    images = {"operator": "datasweep.local/operator:abc", "worker": "datasweep.local/worker:def"}
    objects = render(tmp_path, install.values(images, ("10.213.0.1", 16443)), namespace="ml-experiments")
    container = operator_container(objects)
    assert (container["image"], container["imagePullPolicy"]) == ("datasweep.local/operator:abc", "Never")
    assert {"name": "KUBERNETES_SERVICE_HOST", "value": "10.213.0.1"} in container["env"]
    assert one(objects, "PersistentVolumeClaim")["spec"]["storageClassName"] == ""
    config = config_of(objects)
    assert config["images"]["worker"] == "datasweep.local/worker:def"
    assert config["images"]["pullPolicy"] == "Never"
