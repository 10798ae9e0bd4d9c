"""Bad input gets a clear message naming file:line or the field, exit code 2, and costs nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from datasweep.testing.openai_server import serve_openai
from datasweep.workloads.generate.cli import main
from datasweep.workloads.generate.inputs import GenerateInputError
from datasweep.workloads.generate.pricing import DEFAULT_PRICES, estimate_cost, price_for
from datasweep.workloads.generate.prompts import PromptTemplate, parse_verdict

from .conftest import make_spec, write_jsonl, write_spec


def run_cli(spec_file: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--spec", str(spec_file)])
    return result.exit_code, result.output


@pytest.fixture
def server_url():
    with serve_openai() as server:
        yield server


def test_malformed_lines_are_reported_with_file_and_line(api_key, tmp_path, server_url):
    source = tmp_path / "src"
    source.mkdir()
    (source / "copa_train.jsonl").write_text('{"id": 1, "text": "ok"}\n{"id": 2, "text": \n\n[1, 2]\n')
    spec = make_spec(tmp_path, source, {"base_url": server_url.url})
    code, output = run_cli(write_spec(spec, tmp_path / "spec.yaml"))
    assert code == 2
    assert "copa_train.jsonl:2: not valid JSON" in output
    assert "copa_train.jsonl:4: a record must be a JSON object, got list" in output
    assert sum(server_url.counts.values()) == 0  # nothing was sent


def test_missing_field_names_file_line_and_param(api_key, tmp_path, server_url):
    source = tmp_path / "src"
    write_jsonl(source / "copa_train.jsonl", [{"id": 1, "text": "ok"}, {"id": 2, "premise": "no text"}])
    spec = make_spec(tmp_path, source, {"base_url": server_url.url})
    code, output = run_cli(write_spec(spec, tmp_path / "spec.yaml"))
    assert code == 2
    assert "copa_train.jsonl:2: field 'text' to rephrase is missing (params.rephrase_fields)" in output
    assert sum(server_url.counts.values()) == 0


def test_template_field_missing_from_records(api_key, tmp_path, server_url):
    source = tmp_path / "src"
    write_jsonl(source / "copa_train.jsonl", [{"id": 1, "text": "ok"}])
    spec = make_spec(tmp_path, source, {"base_url": server_url.url, "prompt": "Rephrase {text} about {topic}"})
    code, output = run_cli(write_spec(spec, tmp_path / "spec.yaml"))
    assert code == 2
    assert "copa_train.jsonl:1: params.prompt needs field(s) topic" in output


def test_empty_split_and_missing_splits(api_key, tmp_path, server_url):
    source = tmp_path / "src"
    write_jsonl(source / "copa_train.jsonl", [{"id": 1, "text": "ok"}])
    (source / "copa_test.jsonl").write_text("\n")
    spec = make_spec(tmp_path, source, {"base_url": server_url.url})
    code, output = run_cli(write_spec(spec, tmp_path / "spec.yaml"))
    assert code == 2
    assert "copa_test.jsonl: the split is empty" in output

    empty = tmp_path / "empty"
    empty.mkdir()
    spec = make_spec(tmp_path, empty, {"base_url": server_url.url}, name="other")
    code, output = run_cli(write_spec(spec, tmp_path / "spec2.yaml"))
    assert code == 2
    assert "no split of dataset 'Copa' found; expected one of copa_train.jsonl" in output


def test_duplicate_ids(api_key, tmp_path, server_url):
    source = tmp_path / "src"
    write_jsonl(source / "copa_train.jsonl", [{"id": 1, "text": "a"}, {"id": 1, "text": "b"}])
    spec = make_spec(tmp_path, source, {"base_url": server_url.url})
    code, output = run_cli(write_spec(spec, tmp_path / "spec.yaml"))
    assert code == 2
    assert "copa_train.jsonl:2: duplicate id '1' (first at line 1)" in output


def test_missing_api_key(tmp_path, monkeypatch, dataset_dir, server_url):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = make_spec(tmp_path, dataset_dir, {"base_url": server_url.url})
    code, output = run_cli(write_spec(spec, tmp_path / "spec.yaml"))
    assert code == 2
    assert "environment variable OPENAI_API_KEY is not set" in output
    assert sum(server_url.counts.values()) == 0


def test_bad_params_and_wrong_stage(api_key, tmp_path, dataset_dir):
    spec = make_spec(tmp_path, dataset_dir, {"temperature": 3, "colour": "red"})
    code, output = run_cli(write_spec(spec, tmp_path / "spec.yaml"))
    assert code == 2
    assert "params.temperature" in output
    assert "params.colour" in output
    spec = make_spec(tmp_path, dataset_dir, {"backend": "openai-compatible"})
    code, output = run_cli(write_spec(spec, tmp_path / "spec2.yaml"))
    assert code == 2
    assert "needs base_url" in output
    bad = tmp_path / "qa.yaml"
    bad.write_text(write_spec(spec, tmp_path / "spec3.yaml").read_text().replace("stage: generate", "stage: qa"))
    code, output = run_cli(bad)
    assert code == 2
    assert "datasweep worker qa" in output


def test_resume_state_of_another_fingerprint_is_refused(api_key, tmp_path, dataset_dir, server_url):
    spec = make_spec(tmp_path, dataset_dir, {"base_url": server_url.url})
    (spec.output_path / ".work").mkdir(parents=True)
    (spec.output_path / ".work" / "fingerprint").write_text("0" * 64)
    code, output = run_cli(write_spec(spec, tmp_path / "spec.yaml"))
    assert code == 2
    assert "resume state of fingerprint 000000000000" in output


def test_prompt_templates():
    template = PromptTemplate("Rephrase {text} ({field}), keep {{braces}}", "params.prompt")
    assert template.fields == {"text", "field"}
    assert template.render({"text": "a", "field": "b", "extra": 1}) == "Rephrase a (b), keep {braces}"
    with pytest.raises(GenerateInputError, match=r"template field\(s\) field not available"):
        template.render({"text": "a"})
    with pytest.raises(GenerateInputError, match="positional field"):
        PromptTemplate("Rephrase {}", "params.prompt")
    with pytest.raises(GenerateInputError, match="not a valid template"):
        PromptTemplate("Rephrase {text", "params.prompt")


@pytest.mark.parametrize(
    ("answer", "verdict", "reason"),
    [
        ("KEEP\nSame meaning.", "keep", "Same meaning."),
        ("REJECT: changes the cause", "reject", "changes the cause"),
        ("**Keep** - fine", "keep", "fine"),
        ('{"verdict": "reject", "reason": "drift"}', "reject", "drift"),
        ("maybe?", "reject", "unparseable verdict: 'maybe?'"),
        ("", "reject", "unparseable verdict: ''"),
    ],
)
def test_parse_verdict(answer, verdict, reason):
    assert parse_verdict(answer) == (verdict, reason)


def test_prices():
    assert price_for("gpt-4o-2024-08-06", DEFAULT_PRICES) == DEFAULT_PRICES["gpt-4o"]
    assert price_for("gpt-4o-mini-2024-07-18", DEFAULT_PRICES) == DEFAULT_PRICES["gpt-4o-mini"]
    assert price_for("llama-3", DEFAULT_PRICES) is None
    assert estimate_cost("gpt-4o", 1_000_000, 1_000_000, DEFAULT_PRICES, batch=False) == 12.5
    assert estimate_cost("gpt-4o", 1_000_000, 1_000_000, DEFAULT_PRICES, batch=True) == 6.25
