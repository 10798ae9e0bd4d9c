"""What produced an Artifact beyond its parameters (issue 25): versions, image, models answered, GPU.

A worker records it in its manifest (`finalize_artifact`); on the cluster the operator adds the image and its
digest from the pod (`pod_image`) and writes it to the Artifact's `status.provenance`.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import Field

from datasweep._common import CamelModel

# The libraries whose versions can change a result; recorded when installed.
LIBRARIES = ("torch", "transformers", "openai")


class Provenance(CamelModel):
    datasweep_version: str | None = Field(default=None, description="The worker's datasweep version")
    recipe: int | None = Field(default=None, description="The worker's recipe version of its stage kind")
    python: str | None = None
    libraries: dict[str, str] = Field(default_factory=dict, description="torch, transformers, openai: as installed")
    image: str | None = Field(default=None, description="On the cluster: the worker pod's image")
    image_id: str | None = Field(default=None, description="On the cluster: the pod's imageID (digest included)")
    models: dict[str, int] = Field(
        default_factory=dict, description="Generation: the model names the API answered with, and how often"
    )
    system_fingerprints: dict[str, int] = Field(
        default_factory=dict, description="Generation: the system_fingerprint values the API answered with, counted"
    )
    gpu: str | None = Field(default=None, description='Training: the GPU product, or "cpu"')
    gpu_count: int | None = None

    @property
    def image_digest(self) -> str | None:
        """`sha256:...` of the image ID (`docker.io/x@sha256:...`, or a bare `sha256:...` for a loaded image)."""
        if not self.image_id or "sha256:" not in self.image_id:
            return None
        return "sha256:" + self.image_id.rsplit("sha256:", 1)[1]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def runtime_provenance(stage: str, specific: Provenance | None = None) -> Provenance:
    """This process's versions, with what the stage itself recorded (`specific`: models answered, GPU)."""
    from datasweep import __version__
    from datasweep.recipes import recipe_version

    base = {
        "datasweep_version": __version__,
        "recipe": recipe_version(stage),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }
    return Provenance.model_validate({**base, **(specific.model_dump(exclude_unset=True) if specific else {})})


def answer_provenance(entries: Iterable[Mapping[str, Any]]) -> Provenance:
    """Generation: the model names and system fingerprints of the answers the data was made from, counted."""
    models: Counter[str] = Counter()
    fingerprints: Counter[str] = Counter()
    for entry in entries:
        if entry.get("model"):
            models[str(entry["model"])] += 1
        if entry.get("system_fingerprint"):
            fingerprints[str(entry["system_fingerprint"])] += 1
    return Provenance(models=dict(sorted(models.items())), system_fingerprints=dict(sorted(fingerprints.items())))


def gpu_provenance(device: Any = None, count: int | None = None) -> Provenance:
    """Training: the GPU product the stage trained on and how many, or "cpu". `device`: the torch device it
    used (default: CUDA when available); `count`: the GPUs of all its ranks (default: those this process sees)."""
    import torch

    used = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if used.type != "cuda":
        return Provenance(gpu="cpu", gpu_count=0)
    return Provenance(
        gpu=torch.cuda.get_device_name(used), gpu_count=count if count is not None else torch.cuda.device_count()
    )


def pod_image(pods: Sequence[Mapping[str, Any]]) -> Provenance:
    """The image and image ID the pods' containers ran (the first that reports an image ID)."""
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            if container.get("imageID"):
                return Provenance(image=container.get("image"), image_id=container["imageID"])
    return Provenance()
