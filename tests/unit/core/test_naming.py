from __future__ import annotations

from datetime import datetime

import pytest

from datasweep.core import naming


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.7, "07"),
        (1.0, "10"),
        (0.75, "075"),
        (0.5, "05"),
        (1.25, "125"),
        (0.0, "00"),
        (512, "512"),
        (-0.5, "m05"),
        (0.1234, "0123"),
    ],
)
def test_numbers(value: float, text: str) -> None:
    assert naming.format_number(value) == text


@pytest.mark.parametrize(
    ("model", "slug"),
    [
        ("gpt-4o", "gpt4o"),
        ("gpt-3.5-turbo", "gpt35"),
        ("gpt-4o-mini", "gpt4omini"),
        ("/models/Llama-3.2-1B", "llama321b"),
    ],
)
def test_model_slugs(model: str, slug: str) -> None:
    assert naming.model_slug(model) == slug


def test_semantic_names_follow_the_seed() -> None:
    assert naming.semantic_name("gpt-4o", 0.7, 1.0) == "temp07_topp10_gpt4o"
    assert naming.semantic_name("gpt-3.5-turbo", 0.5, 1.0) == "temp05_topp10_gpt35"
    assert (
        naming.semantic_name("gpt-4o", 0.9, 0.8, max_tokens=512, frequency_penalty=0.2)
        == "temp09_topp08_gpt4o_mt512_fp02"
    )
    assert naming.semantic_name("gpt-4o", 0.7, 1.0, max_tokens=256) == "temp07_topp10_gpt4o"


def test_kubernetes_names_are_dns_labels_and_keep_the_fingerprint() -> None:
    name = naming.artifact_name(
        "Very_Long.Dataset-Name" * 3, "temp07_topp10_gpt4o_mt512_fp02_pp02", "0123456789ab", "moe-steer"
    )
    assert len(name) <= naming.ARTIFACT_NAME_LIMIT
    assert name.endswith("-0123456789ab")
    assert name == name.lower()
    assert all(c.isalnum() or c == "-" for c in name)
    job = naming.job_name(name, 12)
    assert len(job) <= 63
    assert job.endswith("-r12")
    assert naming.job_name(name, 0) == name


def test_batches() -> None:
    assert naming.default_batch("temperature_study", datetime(2024, 12, 29)) == "batch_20241229_temperature_study"
    assert naming.batch_object_name("batch_20241229_temperature") == "batch-20241229-temperature"
