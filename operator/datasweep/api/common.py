"""Small shared parts of the datasweep objects."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from datasweep.api._base import PATTERN_FORMS, CamelModel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Object names the Jobs refer to (Secret, ConfigMap, PersistentVolumeClaim): DNS-1123 subdomains.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A key of a Secret or ConfigMap.
DATA_KEY = r"^[-._a-zA-Z0-9]+$"
# A Kubernetes label value (Kueue copies queueName into the kueue.x-k8s.io/queue-name label of every Job).
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A resource quantity as the API server parses it (k8s.io/apimachinery resource.Quantity), never negative.
QUANTITY = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"

# Each pattern of the models in words, with an example (pydantic error messages show this, not the regex).
PATTERN_FORMS.update(
    {
        DNS_LABEL: "a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or "
        "digit, e.g. meta-train",
        DNS_SUBDOMAIN: "a DNS-1123 subdomain (a Kubernetes object name): lower-case letters, digits, '-' and '.', "
        "starting and ending with a letter or digit, e.g. openai-key",
        DATA_KEY: "a Secret or ConfigMap key: letters, digits, '-', '_' and '.', e.g. api-key",
        r"^[0-9a-f]{64}$": "a sha256 digest: 64 lower-case hex characters, e.g. 9f86d081884c7d65... (64 in all)",
        r"^[A-Za-z_][A-Za-z0-9_]*$": "an environment variable name: letters, digits and '_', not starting with a "
        "digit, e.g. OPENAI_API_KEY",
        r"^(Always|IfNotPresent|Never)$": "Always, IfNotPresent or Never",
        r"^batch_[0-9]{8}_[a-z0-9_]+$": "batch_<YYYYMMDD>_<purpose> with a lower-case purpose of letters, digits "
        "and '_', e.g. batch_20241229_temperature",
        r"^[A-Za-z0-9][A-Za-z0-9_.-]*$": "letters, digits, '_', '.' and '-', starting with a letter or digit, "
        "e.g. Copa",
        r"^[A-Za-z0-9_]+$": "letters, digits and '_', e.g. temperature_study",
    }
)

# The same rule for the API server (CEL on the string) and for the operator and the CLI (below).
_PATH_RULE = "!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')"
_PATH_MESSAGE = "must be a relative path inside the volume: no leading / and no .. component"


def check_volume_path(value: str) -> str:
    """A path from a spec stays inside its volume: relative, no `..` component (symlinks are checked on use)."""
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"{value!r} {_PATH_MESSAGE}")
    return value


def check_label_value(value: str) -> str:
    if len(value) > 63 or not re.fullmatch(LABEL_VALUE, value):
        raise ValueError(
            f"{value!r} is not a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit"
        )
    return value


def check_quantity(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a resource request is a quantity such as 8, 500m or 64Gi")
        return value
    if not re.fullmatch(QUANTITY, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity; write e.g. 8, 500m, 64Gi or 1.5")
    return value


def check_url(value: str) -> str:
    """An absolute http(s) URL with a host, as the generate worker's HTTP client needs it."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not an http(s) URL with a host; write e.g. http://vllm:8000/v1")
    return value


VolumeRelPath = Annotated[
    str,
    AfterValidator(check_volume_path),
    Field(json_schema_extra={"x-kubernetes-validations": [{"rule": _PATH_RULE, "message": _PATH_MESSAGE}]}),
]
# int-or-string with the quantity pattern, as controller-gen writes resource.Quantity.
Quantity = Annotated[
    int | str,
    AfterValidator(check_quantity),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": QUANTITY}),
]
LabelValue = Annotated[
    str, AfterValidator(check_label_value), Field(max_length=63, json_schema_extra={"pattern": LABEL_VALUE})
]
HttpURL = Annotated[
    str,
    AfterValidator(check_url),
    Field(
        json_schema_extra={
            "pattern": r"^https?://[^\s/?#]+[^\s]*$",
            "x-kubernetes-validations": [
                {
                    "rule": "isURL(self) && url(self).getHostname() != ''",
                    "message": "must be an http(s) URL with a host",
                }
            ],
        }
    ),
]


class SecretKeyRef(CamelModel):
    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name in the Experiment's namespace"
    )
    key: str = Field(default="api-key", min_length=1, max_length=253, pattern=DATA_KEY, description="Key in the Secret")


class ConfigMapKeyRef(CamelModel):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    key: str = Field(min_length=1, max_length=253, pattern=DATA_KEY)


class PromptSource(CamelModel):
    """A prompt template: inline text or a ConfigMap key (the text is hashed into the fingerprint)."""

    text: str | None = Field(default=None, max_length=65536, description="Template with named fields, e.g. {text}")
    config_map_key_ref: ConfigMapKeyRef | None = None


class VolumePath(CamelModel):
    """A path on a PersistentVolumeClaim; no claim means the datasweep data volume."""

    pvc: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN, description="PVC name; default: the data volume"
    )
    path: VolumeRelPath = Field(min_length=1, max_length=1024, description="Path inside the volume")


HUB_ID_UNSUPPORTED = (
    "hubId is not supported: every Job runs offline (HF_HUB_OFFLINE=1) so that a fingerprint always means "
    "the same weights; download the model once (huggingface-cli download REPO --revision REV --local-dir DIR), "
    "copy it onto a volume and set pvc and path instead"
)


class ModelRef(CamelModel):
    pvc: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN, description="PVC holding the model; default: data volume"
    )
    path: VolumeRelPath | None = Field(default=None, max_length=1024, description="Model directory inside the volume")
    hub_id: str | None = Field(
        default=None,
        max_length=256,
        description="Not supported (Jobs run offline): rejected with a message; put the model on a volume",
    )

    @model_validator(mode="after")
    def _path_only(self) -> ModelRef:
        if self.hub_id is not None:
            raise ValueError(HUB_ID_UNSUPPORTED)
        if not self.path:
            raise ValueError("path is required: the model directory inside the volume (pvc: default data volume)")
        return self


class Resources(CamelModel):
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs per node (nvidia.com/gpu)")
    nodes: int = Field(default=1, ge=1, le=64, description="Nodes; above 1 an Indexed Job with torchrun is used")
    cpu: Quantity | None = Field(default=None, description="CPU request per pod, e.g. 8 or 500m")
    memory: Quantity | None = Field(default=None, description="Memory request per pod, e.g. 64Gi")
    gpu_memory: Quantity | None = Field(
        default=None,
        description="Memory of one GPU the stage runs on, e.g. 80Gi: plan and the operator refuse a training stage "
        "whose estimate does not fit it (default: the GPU product of the operator's GPU node selector, else an "
        "80 GB H100)",
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(CamelModel):
    """A condition as in the Kubernetes API conventions."""

    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = None
