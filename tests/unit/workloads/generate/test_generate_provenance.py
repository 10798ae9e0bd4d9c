"""Provenance in a generate manifest (issue 25): the worker's versions and what the API answered with."""

from __future__ import annotations

import importlib.metadata
import json
import platform

import pytest

from datasweep import __version__
from datasweep.recipes import recipe_version
from datasweep.store.manifest import read_manifest
from datasweep.testing.openai_server import ServerBehavior, serve_openai
from datasweep.workloads.generate.worker import run_generate

from .conftest import make_spec

FAST_POLL = {"backend": "openai-batch", "poll_interval": 0.01, "max_poll_interval": 0.02}


@pytest.mark.parametrize("backend", [{}, FAST_POLL], ids=["chat", "batch"])
def test_the_manifest_records_versions_and_the_models_and_fingerprints_the_api_answered_with(
    api_key, tmp_path, dataset_dir, monkeypatch, backend
):
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", str(termination))
    behavior = ServerBehavior(
        served_models={"gpt-4o": "gpt-4o-2024-08-06", "judge": "judge-2024-01-01"}, system_fingerprint="fp_abc123"
    )
    with serve_openai(behavior) as server:
        params = {**backend, "base_url": server.url, "model": "gpt-4o", "validation": {"model": "judge"}}
        spec = make_spec(tmp_path, dataset_dir, params)
        run_generate(spec)
    manifest = read_manifest(spec.output_path)
    assert manifest is not None
    provenance = manifest.provenance
    assert provenance.datasweep_version == __version__
    assert provenance.recipe == recipe_version("generate")
    assert provenance.python == platform.python_version()
    assert provenance.libraries["openai"] == importlib.metadata.version("openai")
    # 9 records: 9 generation answers from the snapshot behind gpt-4o and 9 verdicts from the judge's
    assert provenance.models == {"gpt-4o-2024-08-06": 9, "judge-2024-01-01": 9}
    assert provenance.system_fingerprints == {"fp_abc123": 18}
    assert provenance.gpu is None  # not a training stage
    assert provenance.image is None  # not in a pod: the operator adds the pod's image
    # the same record travels to the operator in the termination message
    message = json.loads(termination.read_text())
    assert message["provenance"]["models"] == {"gpt-4o-2024-08-06": 9, "judge-2024-01-01": 9}
    assert message["provenance"]["datasweepVersion"] == __version__


def test_a_manifest_written_before_provenance_existed_still_loads(tmp_path):
    (tmp_path / "manifest.json").write_text(
        json.dumps({"fingerprint": "f" * 64, "stage": "generate", "files": [], "completedAt": "2024-12-29T00:00:00"})
    )
    manifest = read_manifest(tmp_path)
    assert manifest is not None
    assert manifest.provenance.datasweep_version is None
    assert manifest.summary().provenance is not None
