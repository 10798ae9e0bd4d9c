"""Issue 15, defect 2: the worker sends exactly the prompt text that was fingerprinted (NFC).

A prompt written in NFC and the same prompt written in NFD are one fingerprint (SPEC 2: strings are
NFC-normalized), so they must be one request too. Records are sent as written: their bytes are what the
dataset's content hash covers.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any

from datasweep.api.experiment import ExperimentSpec
from datasweep.core.plan import PlanInputs, plan_experiment
from datasweep.core.worker_spec import worker_spec_for
from datasweep.testing.openai_server import ServerBehavior, serve_openai
from datasweep.workloads.generate.worker import run_generate

from .conftest import write_jsonl

PROMPT = "Réécris en français, sans changer le sens : {text}"
JUDGE = "Vérifie (KEEP ou REJECT) : {original} → {rephrased}"


def _spec(prompt: str, judge: str, base_url: str) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "batch": "batch_20241229_unicode",
            "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
            "generation": {
                "backend": "openai-compatible",
                "baseURL": base_url,
                "prompt": {"text": prompt},
                "options": {"system_prompt": unicodedata.normalize("NFD", "Tu es précis.")},
            },
            "validation": {"model": "judge", "prompt": {"text": judge}},
        }
    )


def _run(tmp_path: Path, source: Path, form: str) -> tuple[str, list[dict[str, Any]]]:
    with serve_openai(ServerBehavior()) as server:
        spec = _spec(unicodedata.normalize(form, PROMPT), unicodedata.normalize(form, JUDGE), server.url)
        plan = plan_experiment(spec, PlanInputs({"Copa": "a" * 64}, created=datetime(2024, 12, 29)))
        stage = plan.points[0].generate
        worker = worker_spec_for(
            stage, data_root=str(tmp_path), relpath=form, source_dir=str(source), batch=plan.batch, experiment="x"
        )
        run_generate(worker)
        return stage.fingerprint, list(server.chat_log)


def test_nfc_and_nfd_prompts_are_one_fingerprint_and_one_request(api_key: str, tmp_path: Path) -> None:
    source = tmp_path / "source"
    # a record in NFD is sent as written: its bytes are in the dataset hash
    write_jsonl(source / "copa_train.jsonl", [{"idx": 0, "text": unicodedata.normalize("NFD", "café noir")}])
    nfc_fingerprint, nfc_log = _run(tmp_path, source, "NFC")
    nfd_fingerprint, nfd_log = _run(tmp_path, source, "NFD")
    assert nfc_fingerprint == nfd_fingerprint

    def messages(log: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        return sorted((entry["messages"] for entry in log), key=repr)

    assert messages(nfd_log) == messages(nfc_log)
    sent = [message["content"] for entry in nfc_log for message in entry["messages"]]
    generation = next(text for text in sent if text.startswith("Réécris"))
    assert generation == unicodedata.normalize("NFC", PROMPT).format(text=unicodedata.normalize("NFD", "café noir"))
    assert unicodedata.normalize("NFC", "Tu es précis.") in sent
    assert any(text.startswith(unicodedata.normalize("NFC", "Vérifie")) for text in sent)
