"""The one small client layer: create-or-get on 409, merge patches, status patches (sync kubernetes client)."""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from datasweep import GROUP, VERSION

PLURALS = {"Experiment": "experiments", "Artifact": "artifacts", "Batch": "batches"}


class KubeConfigError(RuntimeError):
    """Neither in a pod nor a usable kubeconfig."""


def _kubeconfig() -> str | None:
    # Read $KUBECONFIG now: the library reads it once at import, before tests or the demo set it.
    return os.environ.get("KUBECONFIG")


class RateLimiter:
    """Token bucket: `qps` requests per second on average, up to `burst` at once (client-go's QPS/Burst).

    The operator sets it from its settings (apiQps, apiBurst) so that a 10,000-point fan-out paces itself
    instead of hammering the API server into throttling everyone else; the CLI leaves it off."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps, self.burst = qps, burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.qps
            time.sleep(wait)


_LIMITER: RateLimiter | None = None


def set_rate_limit(qps: float | None, burst: int = 1) -> None:
    """Pace every request of this process's client layer (None: no limit)."""
    global _LIMITER
    _LIMITER = RateLimiter(qps, burst) if qps else None


class _PacedApiClient(client.ApiClient):  # type: ignore[misc]
    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if _LIMITER is not None:
            _LIMITER.acquire()
        return super().call_api(*args, **kwargs)


@functools.cache
def api_client(context: str | None = None) -> Any:
    """In a pod: the service account; elsewhere: $KUBECONFIG (or ~/.kube/config) and its `context`."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=_kubeconfig(), context=context, client_configuration=configuration
            )
        except (config.ConfigException, FileNotFoundError, TypeError) as exc:
            raise KubeConfigError(f"no usable kubeconfig or in-cluster credentials: {exc}") from exc
    # Enough pooled connections for the operator's handler threads and bounded creates in flight.
    configuration.connection_pool_maxsize = 32
    return _PacedApiClient(configuration)


def default_namespace(context: str | None = None) -> str:
    """The namespace of the kubeconfig context (or of the pod), else `default`."""
    try:
        contexts, active = config.list_kube_config_contexts(config_file=_kubeconfig())  # type: ignore[no-untyped-call]
    except (config.ConfigException, FileNotFoundError, TypeError):
        try:
            with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as handle:
                return handle.read().strip() or "default"
        except OSError:
            return "default"
    current = next((c for c in contexts if c["name"] == context), active) if context else active
    namespace = (current or {}).get("context", {}).get("namespace")
    return str(namespace) if namespace else "default"


def reset() -> None:
    """Forget the cached clients (tests switch clusters)."""
    api_client.cache_clear()


def custom(context: str | None = None) -> Any:
    return client.CustomObjectsApi(api_client(context))


def core() -> Any:
    return client.CoreV1Api(api_client())


def batch_api() -> Any:
    return client.BatchV1Api(api_client())


def warm_up() -> None:
    """Import the API classes now: kubernetes.client imports them (and every model they name) lazily, which
    took seconds of CPU inside the first Experiment's handler, in the middle of its fan-out."""
    custom(), core(), batch_api()


def _create_or_get(create: Callable[[], Any], get: Callable[[], Any]) -> tuple[dict[str, Any], bool]:
    """Create; 409 AlreadyExists means someone (maybe us, earlier) made it: reuse it. Never check-then-create."""
    try:
        return _as_dict(create()), True
    except ApiException as exc:
        if exc.status != 409:
            raise
    return _as_dict(get()), False


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    result = api_client().sanitize_for_serialization(obj)
    assert isinstance(result, dict)
    return result


def create_custom(namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    plural = PLURALS[body["kind"]]
    name = body["metadata"]["name"]
    return _create_or_get(
        lambda: custom().create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body),
        lambda: custom().get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name),
    )


def get_custom(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        result = custom().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return _as_dict(result)


def list_custom(kind: str, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
    result = custom().list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], label_selector=label_selector
    )
    items = _as_dict(result).get("items", [])
    assert isinstance(items, list)
    return items


def patch_custom(kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    return _as_dict(custom().patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name, patch))


def patch_status(
    kind: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
) -> dict[str, Any]:
    """A merge patch of the status. With `resource_version` it is conditional: the API server answers 409
    Conflict when the object changed since that version was read (a write that depends on what was read)."""
    body: dict[str, Any] = {"status": status}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return _as_dict(
        custom().patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURALS[kind], name, body)
    )


def is_conflict(exc: BaseException) -> bool:
    """A conditional write lost to a newer version of the object: read it again and recompute."""
    return isinstance(exc, ApiException) and exc.status == 409


def _plain(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request with a plain dict in and out. The typed APIs turn a dict body into their model (V1Job with
    every nested model) and the answer back, then `_as_dict` undoes that: for the Job of every
    Artifact that was a sixth of the operator's CPU in a fan-out. Errors raise ApiException as theirs do."""
    api = api_client()
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = api.param_serialize(
        method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    response = api.call_api(*request)
    response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    result = json.loads(response.data)
    assert isinstance(result, dict)
    return result


def create_job(namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    return _create_or_get(
        lambda: _plain("POST", path, body), lambda: _plain("GET", f"{path}/{body['metadata']['name']}")
    )


def post_event(involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """A core/v1 Event about `involved` (what kopf.info/warn post, for threads outside Kopf's handlers)."""
    meta = involved["metadata"]
    namespace = meta["namespace"]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "datasweep"},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    _plain("POST", f"/api/v1/namespaces/{namespace}/events", event)


def job_exists(namespace: str, name: str) -> bool:
    try:
        batch_api().read_namespaced_job(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def delete_job(namespace: str, name: str) -> bool:
    """Delete a Job and its pods (background propagation); False when it was already gone."""
    try:
        batch_api().delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def set_job_suspended(namespace: str, name: str, suspended: bool) -> bool:
    """Suspend or resume a Job (spec.suspend: the Job controller stops or restarts its pods); False when the Job
    does not exist."""
    try:
        # A merge patch, said so: for a dict the client would pick the first type it lists, a JSON patch.
        batch_api().patch_namespaced_job(
            name, namespace, {"spec": {"suspend": suspended}}, _content_type="application/merge-patch+json"
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def create_service(namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    name = body["metadata"]["name"]
    return _create_or_get(
        lambda: core().create_namespaced_service(namespace, body),
        lambda: core().read_namespaced_service(name, namespace),
    )


def delete_service(namespace: str, name: str) -> bool:
    """Delete a Service; False when it was already gone."""
    try:
        core().delete_namespaced_service(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def read_configmap_key(namespace: str, name: str, key: str) -> str | None:
    try:
        data = core().read_namespaced_config_map(name, namespace).data or {}
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    value = data.get(key)
    return value if isinstance(value, str) else None


def secret_has_key(namespace: str, name: str, key: str) -> bool | None:
    """True/False when the Secret exists (with/without the key), None when it does not exist."""
    try:
        secret = core().read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return key in (secret.data or {}) or key in (secret.string_data or {})


def job_pods(namespace: str, job: str) -> list[dict[str, Any]]:
    pods = core().list_namespaced_pod(namespace, label_selector=f"job-name={job}")
    items = _as_dict(pods).get("items", [])
    assert isinstance(items, list)
    return items
