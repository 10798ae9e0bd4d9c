"""Names: semantic directory names for people, DNS-1123 names for Kubernetes (SPEC section 2)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

# Suffixes that say nothing about the model's outputs; `gpt-3.5-turbo` reads as `gpt35`.
MODEL_SUFFIXES = ("turbo", "instruct", "latest", "preview", "chat", "hf")

# Parameters appended to a semantic name when they differ from their defaults: field -> (tag, default).
APPENDED_PARAMS: dict[str, tuple[str, float | int]] = {
    "max_tokens": ("mt", 256),
    "frequency_penalty": ("fp", 0.0),
    "presence_penalty": ("pp", 0.0),
}

K8S_NAME_LIMIT = 63
# Artifact names leave room for a Job attempt suffix (`-r12`) inside the 63-character label limit.
ARTIFACT_NAME_LIMIT = 56


def format_number(value: float | int) -> str:
    """0.7 -> 07, 1.0 -> 10, 0.75 -> 075, 512 -> 512, -0.5 -> m05 (up to 3 decimals, dot removed)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if value >= 0 else f"m{-value}"
    quantized = Decimal(repr(float(value))).quantize(Decimal("0.001"), rounding=ROUND_HALF_EVEN)
    text = format(quantized, "f").rstrip("0")
    if text.endswith("."):
        text += "0"
    sign = "m" if text.startswith("-") else ""
    return sign + text.lstrip("-").replace(".", "")


def model_slug(model: str) -> str:
    """gpt-4o -> gpt4o, gpt-3.5-turbo -> gpt35, /models/Llama-3.2-1B -> llama321b."""
    base = model.rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"[^a-z0-9]", "", base.lower())
    for suffix in MODEL_SUFFIXES:
        if slug.endswith(suffix) and len(slug) > len(suffix):
            slug = slug[: -len(suffix)]
            break
    return slug or "model"


def semantic_name(model: str, temperature: float, top_p: float, **others: float | int) -> str:
    """temp{T}_topp{P}_{model}, plus `_mt512`-style tags for non-default parameters."""
    name = f"temp{format_number(temperature)}_topp{format_number(top_p)}_{model_slug(model)}"
    for field, (tag, default) in APPENDED_PARAMS.items():
        value = others.get(field, default)
        if value != default:
            name += f"_{tag}{format_number(value)}"
    return name


# Short tags of training params commonly swept; any other param is tagged by its words' initials.
AXIS_TAGS = {
    "learning_rate": "lr",
    "inner_lr": "ilr",
    "outer_lr": "olr",
    "num_train_epochs": "ep",
    "num_epochs": "ep",
    "per_device_batch_size": "bs",
    "batch_size": "bs",
    "weight_decay": "wd",
    "warmup_ratio": "wu",
    "seed": "seed",
}


def format_axis_value(value: Any) -> str:
    """A swept value in a name: 3e-05 -> 3e-5, 2.5e-05 -> 2p5e-5, 0.15 -> 015, 2 -> 2, True -> on, 'x y' -> xy."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value != 0 and abs(value) < 0.001:
        mantissa, exponent = f"{value:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        sign = "m" if mantissa.startswith("-") else ""
        return f"{sign}{mantissa.lstrip('-').replace('.', 'p')}e{int(exponent)}"
    if isinstance(value, int | float):
        return format_number(value)
    if value is None:
        return "none"
    return re.sub(r"[^a-z0-9]", "", str(value).lower()) or "x"


def axis_tags(values: dict[str, Any]) -> str:
    """`lr3e-5_ep2` for a training stage's swept values, in the order given (the order of its params)."""
    tags = []
    for name, value in values.items():
        tag = AXIS_TAGS.get(name) or "".join(word[:1] for word in name.split("_"))
        tags.append(f"{tag}{format_axis_value(value)}")
    return "_".join(tags)


def dns_name(*parts: str, limit: int = K8S_NAME_LIMIT) -> str:
    """Join parts into a DNS-1123 label: lower case, `-` separators, at most `limit` characters.

    The last part (a short fingerprint) is kept whole; earlier parts are truncated from their ends.
    """
    cleaned = [re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", p.lower())).strip("-") for p in parts]
    cleaned = [c for c in cleaned if c]
    if not cleaned:
        raise ValueError("a Kubernetes name needs at least one non-empty part")
    tail = cleaned[-1]
    head = "-".join(cleaned[:-1])
    room = limit - len(tail) - (1 if head else 0)
    head = head[:room].rstrip("-")
    return f"{head}-{tail}" if head else tail[:limit]


def artifact_name(dataset: str, semantic: str, short_fingerprint: str, stage: str | None = None) -> str:
    parts = [dataset, semantic] + ([stage] if stage else []) + [short_fingerprint]
    return dns_name(*parts, limit=ARTIFACT_NAME_LIMIT)


def job_name(artifact: str, attempt: int) -> str:
    return dns_name(artifact, f"r{attempt}", limit=K8S_NAME_LIMIT) if attempt else artifact


def default_batch(purpose: str, created: datetime) -> str:
    """batch_<YYYYMMDD>_<purpose> with the UTC date of creation."""
    slug = re.sub(r"[^a-z0-9_]", "_", purpose.lower()).strip("_") or "batch"
    return f"batch_{created.strftime('%Y%m%d')}_{slug}"


def batch_object_name(batch_id: str) -> str:
    """Batch ids use `_`, object names may not: batch_20241229_temperature -> batch-20241229-temperature."""
    return dns_name(batch_id.replace("_", "-"))
