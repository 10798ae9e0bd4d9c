"""Seed 003's own inputs: per-task support/query files with per-task caps (`meta.tasks`), raw CSV records,
and the `project_name` / `experiment_name` tracking fields.

The files are written by the seed's own code path (pandas `DataFrame.to_parquet(index=False)` after its
`create_support_query_split`, `DataFrame.to_csv` for raw records), never by datasweep.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from datasweep.api.stage_params import StageParamsError, validate_params
from datasweep.api.stages.fomaml import FomamlParams
from datasweep.cli.main import cli
from datasweep.store.manifest import read_manifest
from datasweep.workloads.fomaml.data import DataError, load_tasks, prepare, read_parquet_rows
from datasweep.workloads.fomaml.stage import run_validate

from .test_cli import TRAIN_PARAMS

SEED_TASKS = {"biology": 20, "math": 30}


def seed_format_example(raw: dict[str, Any]) -> dict[str, str]:
    """Seed 003 step 3 (`format_example`), as its authors wrote it."""
    prompt = f"请回答以下问题，提供详细解释。\n\n问题：{raw['question']}\n\n请提供答案和解释。"
    metadata = json.dumps(
        {"source": "my_dataset", "category": raw.get("category", "unknown"), "difficulty": raw["difficulty"]}
    )
    return {"prompt": prompt, "response": raw["answer"], "metadata": metadata}


def write_seed_layout(root: Path, seed: int = 42) -> Path:
    """Seed 003 step 4 (`create_support_query_split`) for every task: meta_train/, few_shot_eval/."""
    random.seed(seed)
    for task, count in SEED_TASKS.items():
        examples = [
            {
                "question": f"{task} question {i}, part {i % 3}",
                "answer": f"{task} answer {i}",
                "category": task,
                "difficulty": ["easy", "medium"][i % 2],
            }
            for i in range(count)
        ]
        random.shuffle(examples)
        n_support, n_query = int(count * 0.30), int(count * 0.40)
        parts = {
            "meta_train/{}_support.parquet": examples[:n_support],
            "meta_train/{}_query.parquet": examples[n_support : n_support + n_query],
            "few_shot_eval/{}_test.parquet": examples[n_support + n_query :],
        }
        for pattern, rows in parts.items():
            path = root / pattern.format(task)
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame([seed_format_example(r) for r in rows]).to_parquet(path, index=False)
    return root


def seed_tasks(caps: dict[str, tuple[int | None, int | None]]) -> list[dict[str, Any]]:
    """Seed 003's config `meta.tasks`, paths relative to the input directory."""
    tasks = []
    for task in SEED_TASKS:
        entry: dict[str, Any] = {
            "name": task,
            "support_files": [f"meta_train/{task}_support.parquet"],
            "query_files": [f"meta_train/{task}_query.parquet"],
        }
        support, query = caps.get(task, (None, None))
        if support is not None:
            entry["support_max_samples"] = support
        if query is not None:
            entry["query_max_samples"] = query
        tasks.append(entry)
    return tasks


def test_per_task_files_and_caps_from_the_seed_layout(tmp_path: Path) -> None:
    source = write_seed_layout(tmp_path / "seed")
    params = FomamlParams.model_validate(
        {"tasks": seed_tasks({"biology": (4, 5)}), "support_max_samples": 7, "k_shots": [2]}
    )
    data = tmp_path / "data"
    report = prepare(source, data, params)
    # nothing is re-split: each task's files are copied as the seed split them
    assert report.tasks == {
        "biology": {"support": 6, "query": 8, "test": 6, "2shot": 2},
        "math": {"support": 9, "query": 12, "test": 9, "2shot": 2},
    }
    seed_rows = read_parquet_rows(source / "meta_train" / "math_query.parquet")
    assert read_parquet_rows(data / "meta_train" / "math_query.parquet") == seed_rows
    assert run_validate(data, params).ok

    tasks = {task.name: task for task in load_tasks(data, params)}
    # biology has its own caps; math falls back to the global support cap and has no query cap
    assert (len(tasks["biology"].support), len(tasks["biology"].query)) == (4, 5)
    assert (len(tasks["math"].support), len(tasks["math"].query)) == (7, 12)
    assert tasks["math"].query[0] == (seed_rows[0]["prompt"], seed_rows[0]["response"])
    assert len(tasks["math"].test) == 9


def test_only_the_listed_tasks_train(tmp_path: Path) -> None:
    source = write_seed_layout(tmp_path / "seed")
    params = FomamlParams.model_validate({"tasks": seed_tasks({})[1:], "k_shots": []})
    prepare(source, tmp_path / "data", params)
    assert [task.name for task in load_tasks(tmp_path / "data", params)] == ["math"]


def test_per_task_files_in_other_formats_are_concatenated(tmp_path: Path) -> None:
    source = tmp_path / "mine"
    source.mkdir()
    pd.DataFrame([{"question": f"q{i}, with a comma", "answer": f"a\n{i}"} for i in range(4)]).to_csv(
        source / "s1.csv", index=False
    )
    (source / "s2.jsonl").write_text(
        "".join(json.dumps({"question": f"r{i}", "answer": "b", "metadata": {"k": i}}) + "\n" for i in range(3))
    )
    pd.DataFrame([{"question": f"z{i}", "answer": "c"} for i in range(5)]).to_csv(source / "q.csv", index=False)
    params = FomamlParams.model_validate(
        {
            "tasks": [{"name": "t", "support_files": ["s1.csv", "s2.jsonl"], "query_files": ["q.csv"]}],
            "prompt_key": "question",
            "response_key": "answer",
            "k_shots": [],
            "min_test_samples": 0,
        }
    )
    prepare(source, tmp_path / "data", params)
    (task,) = load_tasks(tmp_path / "data", params)
    assert task.support[0] == ("q0, with a comma", "a\n0")
    assert [p for p, _ in task.support] == ["q0, with a comma", "q1, with a comma", "q2, with a comma",
                                           "q3, with a comma", "r0", "r1", "r2"]  # fmt: skip
    rows = read_parquet_rows(tmp_path / "data" / "meta_train" / "t_support.parquet")
    assert json.loads(rows[4]["metadata"]) == {"k": 0}
    assert json.loads(rows[0]["metadata"]) == {"source": "s1.csv", "task_id": "t"}
    assert run_validate(tmp_path / "data", params).ok


def test_bad_task_files_and_names_are_named_with_the_fix(tmp_path: Path) -> None:
    source = write_seed_layout(tmp_path / "seed")
    tasks = seed_tasks({})
    tasks[1]["query_files"] = ["meta_train/maths_query.parquet"]
    with pytest.raises(DataError, match=r"params\.tasks\[1\]\.query_files\[0\]: .*maths_query\.parquet not found"):
        prepare(source, tmp_path / "data", FomamlParams.model_validate({"tasks": tasks}))

    pd.DataFrame([{"q": "x", "a": "y"}]).to_csv(source / "bad.csv", index=False)
    bad = [{"name": "b", "support_files": ["bad.csv"], "query_files": ["bad.csv"]}]
    with pytest.raises(DataError, match=r"bad\.csv:2: needs string columns 'prompt' and 'response'.*columns: a, q"):
        prepare(source, tmp_path / "data2", FomamlParams.model_validate({"tasks": bad}))

    where = "spec.training[0].params"
    for tasks_value, message in [
        ([{"name": "bio logy", "support_files": ["a"], "query_files": ["b"]}], r"tasks\[0\]\.name: .*letters, digits"),
        ([{"name": "b", "support_files": ["/data/a.parquet"], "query_files": ["b"]}], r"support_files: .*relative"),
        ([{"name": "b", "support_files": ["../a.parquet"], "query_files": ["b"]}], r"support_files: .*'\.\.'"),
        ([{"name": "b", "support_files": ["a"], "query_files": ["b"]}] * 2, r"task name\(s\) \['b'\] appear twice"),
        ([{"name": "b", "support_files": ["a"]}], r"tasks\[0\]\.query_files: Field required"),
    ]:
        with pytest.raises(StageParamsError, match=message):
            validate_params("fomaml", {"tasks": tasks_value}, where)


def test_raw_csv_records_are_prepared(tmp_path: Path) -> None:
    # seed 003 step 1, "或CSV格式": question,answer,category,difficulty, saved by pandas
    raw = [
        {
            "question": f"什么是{topic}{i}？",
            "answer": f'{topic}是, "引号" 与逗号 {i}',
            "category": category,
            "difficulty": ["easy", "medium"][i % 2],
        }
        for category, topic in (("biology", "光合作用"), ("math", "圆的面积"))
        for i in range(10)
    ]
    source = tmp_path / "raw"
    source.mkdir()
    pd.DataFrame(raw).to_csv(source / "science_train.csv", index=False)
    params = FomamlParams.model_validate(
        {
            "task_key": "category",
            "prompt_template": "问题：{question}",
            "response_template": "{answer}",
            "metadata_fields": ["difficulty"],
            "k_shots": [],
        }
    )
    report = prepare(source, tmp_path / "data", params)
    assert report.records == 20
    assert report.tasks["biology"] == {"support": 3, "query": 4, "test": 3}
    rows = [
        row
        for split in ("support", "query")
        for row in read_parquet_rows(tmp_path / "data" / "meta_train" / f"math_{split}.parquet")
    ] + read_parquet_rows(tmp_path / "data" / "few_shot_eval" / "math_test.parquet")
    expected = {(f"问题：{r['question']}", r["answer"]) for r in raw if r["category"] == "math"}
    assert {(row["prompt"], row["response"]) for row in rows} == expected
    assert {json.loads(row["metadata"])["difficulty"] for row in rows} == {"easy", "medium"}


def test_a_csv_record_with_a_missing_value_names_its_line(tmp_path: Path) -> None:
    source = tmp_path / "raw"
    source.mkdir()
    (source / "x_train.csv").write_text("question,answer,task\nq1,a1,t\nq2,a2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"x_train\.csv:3: 2 value\(s\) but the header has 3 column\(s\)"):
        prepare(source, tmp_path / "data", FomamlParams())


def test_worker_spec_trains_on_seed_tasks_with_tracking_names(
    tiny_model: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", str(tmp_path / "termination-log"))
    source = write_seed_layout(tmp_path / "_shared" / "Seed" / "prepared")
    params = {
        **{k: v for k, v in TRAIN_PARAMS.items() if k not in ("task_key", "prompt_template", "response_template")},
        "tasks": seed_tasks({"biology": (3, 4)}),
        "project_name": "my-fomaml-experiment",
        "max_length": 256,
    }
    out = source / "train" / "fomaml-abababababab"
    spec = {
        "stage": "fomaml",
        "artifact": "seed-fomaml-abc",
        "fingerprint": "ab" * 32,
        "dataset": "Seed",
        "semanticName": "prepared",
        "outputDir": str(out),
        "inputs": {"data": str(source)},
        "baseModel": str(tiny_model),
        "params": params,
        "batch": "batch_20260101_seed",
        "experiment": "biology-math",
    }
    (tmp_path / "worker.yaml").write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(cli, ["worker", "fomaml", "--spec", str(tmp_path / "worker.yaml")])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest is not None
    assert manifest.extra["project_name"] == "my-fomaml-experiment"
    assert manifest.extra["experiment_name"] == "biology-math"  # the Experiment's name when not set
    metadata = json.loads((out / "training_metadata.json").read_text())
    assert (metadata["project_name"], metadata["experiment_name"]) == ("my-fomaml-experiment", "biology-math")
    assert (metadata["batch"], metadata["experiment"]) == ("batch_20260101_seed", "biology-math")
    results = json.loads((out / "eval_results.json").read_text())
    assert set(results["tasks"]) == {"biology", "math"}
    assert results["project_name"] == "my-fomaml-experiment"
    prepared = json.loads((out / "data" / "prepare_report.json").read_text())
    assert prepared["caps"] == {"biology": {"support": 3, "query": 4}, "math": {"support": None, "query": None}}
