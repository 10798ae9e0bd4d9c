"""Small shared parts of the datasweep objects."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from datasweep.api._base import CamelModel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class SecretKeyRef(CamelModel):
    name: str = Field(min_length=1, max_length=253, description="Secret name in the Experiment's namespace")
    key: str = Field(default="api-key", min_length=1, max_length=253, description="Key in the Secret")


class ConfigMapKeyRef(CamelModel):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


class PromptSource(CamelModel):
    """A prompt template: inline text or a ConfigMap key (the text is hashed into the fingerprint)."""

    text: str | None = Field(default=None, max_length=65536, description="Template with named fields, e.g. {text}")
    config_map_key_ref: ConfigMapKeyRef | None = None


class VolumePath(CamelModel):
    """A path on a PersistentVolumeClaim; no claim means the datasweep data volume."""

    pvc: str | None = Field(default=None, max_length=253, description="PVC name; default: the data volume")
    path: str = Field(min_length=1, max_length=1024, description="Path inside the volume")


HUB_ID_UNSUPPORTED = (
    "hubId is not supported: every Job runs offline (HF_HUB_OFFLINE=1) so that a fingerprint always means "
    "the same weights; download the model once (huggingface-cli download REPO --revision REV --local-dir DIR), "
    "copy it onto a volume and set pvc and path instead"
)


class ModelRef(CamelModel):
    pvc: str | None = Field(default=None, max_length=253, description="PVC holding the model; default: data volume")
    path: str | None = Field(default=None, max_length=1024, description="Model directory inside the volume")
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
    cpu: str | None = Field(default=None, max_length=32, description="CPU request per pod, e.g. '8'")
    memory: str | None = Field(default=None, max_length=32, description="Memory request per pod, e.g. 64Gi")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(CamelModel):
    """A condition as in the Kubernetes API conventions."""

    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = None
