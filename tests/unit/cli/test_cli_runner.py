"""`datasweep run` and `datasweep plan` beyond the happy path: failures, training order, Ctrl-C, force, plan cost.

The workers here are `fake_worker.py` (through `--worker-command`), so each failure mode is under the test's
control; the real generate worker runs in test_cli_scenarios.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli_helpers import copa_dataset, fake_model, fake_worker_command, generation

from conftest import Invoke

BATCH = "batch_20250101_runner"


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "batch": BATCH,
        "datasets": copa_dataset(),
        "generation": generation(None, temperature=[0.5, 0.7]),
        "validation": {"model": "gpt-4o", "temperature": 0.0},
    }
    base.update(overrides)
    return base


def with_training(workspace: Path) -> dict[str, Any]:
    fake_model(workspace / "models" / "tiny")
    return spec(
        training=[
            {
                "name": "meta",
                "kind": "fomaml",
                "baseModel": {"path": "models/tiny"},
                # Copa records: id and text (checked before anything runs)
                "params": {"task_key": "id", "prompt_template": "{text}", "response_template": " {id}"},
                "resources": {"gpus": 2},
            }
        ]
    )


def test_training_runs_after_its_generate_stage_and_is_reused(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    experiment = write_experiment("runner-train", with_training(workspace))
    root = workspace / "root"
    first = invoke("run", experiment, "--root", root, "-j", "4", "--worker-command", fake_worker_command())
    assert "2 points: 0 reused, 2 created (4 stages: 0 reused, 4 created)" in first.output
    trained = sorted(root.glob("_shared/Copa/*/train/fomaml-*/model.txt"))
    assert len(trained) == 2  # the fake worker asserts its input manifest existed when it started
    second = invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command("fail"))
    assert "2 points: 2 reused, 0 created (4 stages: 4 reused, 0 created)" in second.output


def test_a_failed_stage_is_named_with_its_log_and_blocks_its_dependents(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    experiment = write_experiment("runner-fail", with_training(workspace))
    root = workspace / "root"
    result = invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command("fail"), expect=1)
    assert "FAILED generate Copa/temp05_topp10_gpt4o" in result.output
    assert "the worker exited with code 1" in result.output
    assert "simulated failure: the model diverged" in result.output  # the log tail
    log = root / ".datasweep" / "logs"
    assert sorted(p.name for p in log.iterdir())[0].endswith("-1.log")
    assert "skipped fomaml" in result.output
    assert not list(root.glob("_shared/Copa/*/train/*/manifest.json"))
    records = [json.loads(p.read_text()) for p in (root / ".datasweep" / "artifacts").glob("*.json")]
    phases = sorted((r["stage"], r["phase"]) for r in records)
    assert phases == [("fomaml", "Pending")] * 2 + [("generate", "Failed")] * 2
    record = next(r for r in records if r["stage"] == "generate")
    # the cause fixed, a rerun resumes: every stage runs, the log attempt number goes up
    rerun = invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command())
    assert "(4 stages: 0 reused, 4 created)" in rerun.output
    assert list(log.glob(f"{record['name']}-2.log"))


def test_ctrl_c_stops_workers_and_a_rerun_resumes(workspace: Path, write_experiment: Callable[..., Path]) -> None:
    experiment = write_experiment("runner-sigint", spec())
    root = workspace / "root"
    command = [sys.executable, "-m", "datasweep", "run", str(experiment), "--root", str(root), "-j", "2"]
    env = dict(os.environ)
    process = subprocess.Popen(
        [*command, "--worker-command", fake_worker_command("slow")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(root.glob("_shared/Copa/*/started"))) < 2:
            assert process.poll() is None, process.communicate()[0].decode()
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    text = output.decode()
    assert process.returncode == 130, text
    assert "interrupted" in text
    assert "rerun" in text
    assert not list(root.glob("_shared/Copa/temp*/manifest.json"))  # nothing half-done is marked complete
    phases = {json.loads(p.read_text())["phase"] for p in (root / ".datasweep" / "artifacts").glob("*.json")}
    assert phases == {"Pending"}
    rerun = subprocess.run([*command, "--worker-command", fake_worker_command()], env=env, capture_output=True)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert len(list(root.glob("_shared/Copa/temp*/manifest.json"))) == 2


def test_force_regenerate_supersedes_and_gc_offers_the_old_copy(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    experiment = write_experiment("runner-force", spec())
    root = workspace / "root"
    invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command())
    forced = invoke("run", experiment, "--root", root, "--force-regenerate", "--worker-command", fake_worker_command())
    assert "2 points: 0 reused, 2 created" in forced.output
    assert "moved aside" in forced.output
    assert len(list(root.glob("_shared/Copa/temp*/manifest.json"))) == 2
    gc = json.loads(invoke("gc", "--root", root, "-o", "json").stdout)
    assert sorted(c["reason"] for c in gc["candidates"]) == ["superseded by forceRegenerate"] * 2
    invoke("gc", "--root", root, "--yes")
    assert not list(root.glob("_shared/Copa/.*superseded*"))
    assert len(list(root.glob("_shared/Copa/temp*/manifest.json"))) == 2


def test_plan_estimates_tokens_cost_and_gpu_hours_and_creates_nothing(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    experiment = write_experiment("runner-plan", with_training(workspace))
    root = workspace / "root"
    plan = json.loads(invoke("plan", experiment, "--root", root, "-o", "json").stdout)
    assert plan["totals"]["misses"] == 4
    assert plan["totals"]["hits"] == 0
    # 5 records x 1 field x 256 max tokens per generation, 64 per validation
    assert plan["totals"]["completionTokens"] == 2 * (5 * 256 + 5 * 64)
    assert plan["totals"]["costUsd"] > 0  # gpt-4o is priced
    assert plan["totals"]["gpuHours"] == 2 * 2 * 1.0
    assert not root.exists()
    table = invoke("plan", experiment, "--root", root, "--hours-per-training", "3").stdout
    assert "12 GPU-hours" in table
    assert "nothing was created" in table
    invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command())
    after = json.loads(invoke("plan", experiment, "--root", root, "-o", "json").stdout)
    assert after["totals"]["hits"] == 4
    assert after["totals"]["costUsd"] == 0


def training_sweep(workspace: Path, inner_lr: list[float]) -> dict[str, Any]:
    fake_model(workspace / "models" / "tiny")
    stage = {
        "name": "meta",
        "kind": "fomaml",
        "baseModel": {"path": "models/tiny"},
        "params": {
            "task_key": "id",
            "prompt_template": "{text}",
            "response_template": " {id}",
            "inner_lr": inner_lr,
            "num_inner_steps": [1, 2],
        },
    }
    return spec(training=[stage], objective={"stage": "meta", "metric": "queryLossAfter", "goal": "minimize"})


def test_a_training_sweep_runs_one_stage_per_combination_and_a_second_reuses_the_shared_ones(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    root = workspace / "root"
    first = write_experiment("sweep-low", training_sweep(workspace, [1e-5, 3e-5]))
    planned = json.loads(invoke("plan", first, "--root", root, "-o", "json").stdout)
    assert planned["totals"]["stages"] == 2 + 8
    values = [s["values"] for s in planned["stages"] if s["kind"] == "fomaml"]
    assert values[:4] == [
        {"inner_lr": 1e-5, "num_inner_steps": 1},
        {"inner_lr": 1e-5, "num_inner_steps": 2},
        {"inner_lr": 3e-5, "num_inner_steps": 1},
        {"inner_lr": 3e-5, "num_inner_steps": 2},
    ]
    table = invoke("plan", first, "--root", root).stdout
    assert "meta(ilr1e-5_nis2)" in table
    assert "stage meta: 4 combinations of its own grid per point, 8 fomaml Artifacts" in table
    ran = invoke("run", first, "--root", root, "-j", "4", "--worker-command", fake_worker_command())
    assert "2 points: 0 reused, 2 created (10 stages: 0 reused, 10 created)" in ran.output
    assert len(list(root.glob("_shared/Copa/*/train/fomaml-*/model.txt"))) == 8
    assert "meta(ilr3e-5_nis1):done" in ran.output
    lowest = "queryLossAfter=1.77 (temperature=0.5, inner_lr=3e-05, num_inner_steps=2; 2 tied)"  # the first name
    assert "best (minimize queryLossAfter of meta): copa-temp05-topp10-gpt4o-fomaml-" in ran.output
    assert lowest in ran.output
    second = write_experiment("sweep-high", training_sweep(workspace, [3e-5, 1e-4]))
    again = invoke("run", second, "--root", root, "-j", "4", "--worker-command", fake_worker_command())
    # the generate stages and the 4 shared combinations are reused; a new learning rate never regenerates
    assert "(10 stages: 6 reused, 4 created)" in again.output
    assert len(list(root.glob("_shared/Copa/*/train/fomaml-*/model.txt"))) == 12
    assert len(list(root.glob("_shared/Copa/*/manifest.json"))) == 2
    # results: one row per combination this experiment consumes, the varying axes as columns
    rows = json.loads(invoke("results", "sweep-low", "--root", root, "-o", "json").stdout)
    assert len(rows) == 8
    assert {(r["temperature"], r["inner_lr"], r["num_inner_steps"]) for r in rows} == {
        (t, lr, n) for t in (0.5, 0.7) for lr in (1e-5, 3e-5) for n in (1, 2)
    }
    assert {r["queryLossAfter"] for r in rows if r["inner_lr"] == 3e-5 and r["num_inner_steps"] == 2} == {1.77}
    # STAGE is the name of the experiment's training entry, not the kind
    assert {r["stage"] for r in rows} == {"meta"}
    by_batch = json.loads(invoke("results", BATCH, "--root", root, "-o", "json").stdout)
    assert {r["stage"] for r in by_batch} == {"meta"}
    # the best the run printed is the row marked, as status.best on a cluster
    assert [(r["temperature"], r["inner_lr"], r["num_inner_steps"]) for r in rows if r.get("best")] == [(0.5, 3e-5, 2)]
    everything = json.loads(invoke("results", "sweep-low", "--root", root, "--all", "-o", "json").stdout)
    assert len(everything) == 12  # sweep-high's inner_lr 1e-4 on the same points too
    table = invoke("results", "sweep-low", "--root", root).stdout
    header = table.splitlines()[:2]
    assert header[0] == "the same in every row:"
    assert header[1].startswith("  generation: model=gpt-4o, top_p=1.0")
    assert "INNER_LR" in table
    assert "NUM_INNER_STEPS" in table
    assert "TOP_P" not in table
    assert "BEST" in table
    png = workspace / "loss.png"
    plotted = invoke(
        "results",
        "sweep-low",
        "--root",
        root,
        "--plot",
        "queryLossAfter",
        "--axis",
        "inner_lr",
        "--by",
        "num_inner_steps",
        "--out",
        png,
    )
    assert f"wrote {png} (8 points)" in plotted.output
    assert png.read_bytes().startswith(b"\x89PNG")
    refused = invoke("results", "sweep-low", "--root", root, "--plot", "queryLossAfter", "--axis", "top_p", expect=2)
    assert "--axis top_p: every row has top_p=1.0, a constant; the axes that vary here:" in refused.output


def test_results_leave_out_what_an_experiment_no_longer_plans_and_all_shows_it_marked(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    root = workspace / "root"
    first = write_experiment("shrinks", training_sweep(workspace, [1e-5, 3e-5]))
    invoke("run", first, "--root", root, "--worker-command", fake_worker_command())
    shrunk = training_sweep(workspace, [3e-5])  # a training value and a temperature leave the grid
    shrunk["generation"]["temperature"] = 0.5
    again = write_experiment("shrinks", shrunk)
    invoke("run", again, "--root", root, "--worker-command", fake_worker_command())
    rows = json.loads(invoke("results", "shrinks", "--root", root, "-o", "json").stdout)
    assert sorted((r["temperature"], r["inner_lr"], bool(r.get("leftGrid"))) for r in rows) == [
        (0.5, 3e-5, False),
        (0.5, 3e-5, False),
    ]
    assert "left the grid" not in invoke("results", "shrinks", "--root", root).stdout
    everything = json.loads(invoke("results", "shrinks", "--root", root, "--all", "-o", "json").stdout)
    assert sorted((r["temperature"], r["inner_lr"], bool(r.get("leftGrid"))) for r in everything) == [
        (0.5, 1e-5, True),
        (0.5, 1e-5, True),
        (0.5, 3e-5, False),
        (0.5, 3e-5, False),
        (0.7, 1e-5, True),
        (0.7, 1e-5, True),
        (0.7, 3e-5, True),
        (0.7, 3e-5, True),
    ]
    assert "left the grid" in invoke("results", "shrinks", "--root", root, "--all").stdout
    points = json.loads(invoke("results", "shrinks", "--root", root, "--stage", "generate", "-o", "json").stdout)
    assert [(r["temperature"], bool(r.get("leftGrid"))) for r in points] == [(0.5, False)]


def test_plan_says_what_a_random_search_samples(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    raw = training_sweep(workspace, [1e-5, 3e-5])  # 2 temperatures x 4 fomaml combinations = 8
    raw["search"] = {"algorithm": "random", "samples": 3, "seed": 4}
    path = write_experiment("sampled", raw)
    table = invoke("plan", path, "--root", workspace / "root").stdout
    assert "random search: 3 of 8 combinations (seed 4)" in table
    assert "stage meta: 3 fomaml Artifacts" in table
    planned = json.loads(invoke("plan", path, "--root", workspace / "root", "-o", "json").stdout)
    assert planned["totals"]["search"] == "random search: 3 of 8 combinations (seed 4)"
    assert sum(s["kind"] == "fomaml" for s in planned["stages"]) == 3


def test_results_plot_parallel_draws_every_varying_axis_and_refuses_fewer_than_two(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    root = workspace / "root"
    path = write_experiment("parallel", training_sweep(workspace, [1e-5, 3e-5]))
    invoke("run", path, "--root", root, "-j", "4", "--worker-command", fake_worker_command())
    png = workspace / "parallel.png"
    plotted = invoke("results", "parallel", "--root", root, "--plot-parallel", "queryLossAfter", "--out", png)
    assert f"wrote {png} (8 rows)" in plotted.output
    assert png.read_bytes().startswith(b"\x89PNG")
    unknown = invoke("results", "parallel", "--root", root, "--plot-parallel", "inner_lr", expect=2)
    assert "--plot-parallel inner_lr: not a metric of the fomaml rows; their metrics: " in unknown.output
    assert "queryLossAfter" in unknown.output
    narrow = training_sweep(workspace, [1e-5])
    narrow["generation"]["temperature"] = 0.5  # only num_inner_steps varies
    invoke("run", write_experiment("narrow", narrow), "--root", root, "--worker-command", fake_worker_command())
    refused = invoke("results", "narrow", "--root", root, "--plot-parallel", "queryLossAfter", expect=2)
    assert (
        "--plot-parallel queryLossAfter: needs at least 2 axes that vary; here num_inner_steps varies; use --plot "
        "queryLossAfter --axis num_inner_steps" in refused.output
    )
