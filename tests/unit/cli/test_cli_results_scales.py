"""`datasweep results --plot/--plot-parallel` scales and the constants header.

Learning rates span decades: such an axis is drawn on a log scale (automatically from 2 decades, `--log` to
force, `--linear` to refuse), checked on the matplotlib Axes the plots build; then the real command on a
fake-worker sweep writes the PNGs. The header of the constant axes is grouped and wrapped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
from cli_helpers import copa_dataset, fake_model, fake_worker_command, generation

from conftest import Invoke
from datasweep.cli.common import BadInput
from datasweep.cli.results import constants_header, log_scaled, metric_figure, parallel_figure, plot_metric

METRICS = frozenset({"f1", "em"})


def rows(learning_rates: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 1e-3)) -> list[dict[str, Any]]:
    """Result rows as `results` flattens them: 2 temperatures x the learning rates x 2 epoch counts."""
    out = []
    for temperature in (0.5, 0.9):
        for lr in learning_rates:
            for epochs in (1, 2):
                out.append(
                    {
                        "dataset": "Copa",
                        "stage": "squad",
                        "phase": "Ready",
                        "model": "gpt-4o",
                        "temperature": temperature,
                        "learning_rate": lr,
                        "num_train_epochs": epochs,
                        "em": 50.0 + epochs,
                        "f1": 60.0 + 10 * epochs - temperature + 1000 * lr,
                        "artifact": f"a-{temperature}-{lr}-{epochs}",
                    }
                )
    return out


def _texts_at(ax: Any, x: int) -> dict[str, float]:
    """The value labels the parallel plot wrote beside its axis number `x`, with their heights."""
    return {t.get_text(): t.get_position()[1] for t in ax.texts if round(t.get_position()[0]) == x}


def test_an_axis_spanning_two_decades_is_drawn_on_a_log_scale_and_labelled_so() -> None:
    fig, drawn = metric_figure(rows(), "f1", "learning_rate", "t", by="num_train_epochs", metrics=METRICS)
    ax = fig.axes[0]
    assert drawn == 16
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "linear")
    assert ax.get_xlabel() == "learning_rate (log)"
    assert ax.get_ylabel() == "f1"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1e-05", "3e-05", "0.0001", "0.001"]
    # less than 2 decades stays linear; --log forces it, on the metric too
    narrow = rows((1e-5, 3e-5, 1e-4))
    ax = metric_figure(narrow, "f1", "learning_rate", "t", metrics=METRICS)[0].axes[0]
    assert (ax.get_xscale(), ax.get_xlabel()) == ("linear", "learning_rate")
    forced = metric_figure(narrow, "f1", "learning_rate", "t", metrics=METRICS, log=("learning_rate", "f1"))
    ax = forced[0].axes[0]
    assert (ax.get_xscale(), ax.get_yscale(), ax.get_ylabel()) == ("log", "log", "f1 (log)")
    # --linear turns the automatic scale off
    ax = metric_figure(rows(), "f1", "learning_rate", "t", metrics=METRICS, linear=("learning_rate",))[0].axes[0]
    assert (ax.get_xscale(), ax.get_xlabel()) == ("linear", "learning_rate")


def test_parallel_coordinates_place_a_log_axis_by_powers_of_ten() -> None:
    fig, drawn = parallel_figure(rows(), "f1", "t", METRICS)
    ax = fig.axes[0]
    assert drawn == 16
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["temperature", "learning_rate (log)", "num_train_epochs", "f1"]
    heights = _texts_at(ax, 1)
    assert heights["1e-05"] == pytest.approx(0.0)
    assert heights["0.0001"] == pytest.approx(0.5)  # halfway in decades (linearly it would be at 0.09)
    assert heights["0.001"] == pytest.approx(1.0)
    assert fig.axes[1].get_ylabel() == "f1"  # the colorbar
    linear = parallel_figure(rows(), "f1", "t", METRICS, linear=("learning_rate",))[0].axes[0]
    assert "learning_rate" in [t.get_text() for t in linear.get_xticklabels()]
    assert _texts_at(linear, 1)["0.0001"] == pytest.approx(0.09 / 0.99, abs=1e-3)
    forced = parallel_figure(rows(), "f1", "t", METRICS, log=("f1",))[0]
    assert forced.axes[0].get_xticklabels()[-1].get_text() == "f1 (log)"
    assert forced.axes[1].get_ylabel() == "f1 (log)"
    assert forced.axes[1].get_yscale() == "log"  # the colours follow the metric's scale


@pytest.mark.parametrize(
    ("log", "linear", "message"),
    [
        (("temperature",), (), "--log temperature: not drawn on an axis of this plot; its axes: learning_rate, f1"),
        (("model",), (), "--log model: not drawn on an axis of this plot"),
        (("learning_rate",), ("learning_rate",), "--log learning_rate and --linear learning_rate: give one of them"),
        ((), ("num_train_epochs",), "--linear num_train_epochs: not drawn on an axis of this plot"),
    ],
)
def test_a_scale_for_an_axis_the_plot_does_not_draw_is_refused(
    log: tuple[str, ...], linear: tuple[str, ...], message: str
) -> None:
    with pytest.raises(BadInput) as refused:
        metric_figure(rows(), "f1", "learning_rate", "t", "num_train_epochs", METRICS, log, linear)
    assert message in str(refused.value)


def test_log_is_refused_on_a_value_not_above_zero_or_not_a_number() -> None:
    table = rows()
    table[3]["temperature"] = 0.0
    with pytest.raises(BadInput, match=r"--log temperature: temperature=0.0; a log scale needs every value above 0"):
        log_scaled(table, ["temperature", "learning_rate"], "f1", ("temperature",), ())
    table[5]["f1"] = -1.5
    with pytest.raises(BadInput, match=r"--log f1: f1=-1.5; a log scale needs every value above 0"):
        log_scaled(table, ["learning_rate"], "f1", ("f1",), ())
    with pytest.raises(BadInput, match=r"--log model: model='gpt-4o' is not a number; a log scale needs numbers"):
        log_scaled(table, ["model"], "f1", ("model",), ())
    # a metric not measured yet (None) is no reason to refuse; automatic never picks a non-positive axis
    table[5]["f1"] = None
    assert log_scaled(table, ["temperature", "learning_rate"], "f1", ("f1",), ()) == {"f1", "learning_rate"}


def test_the_plots_are_real_pngs(tmp_path: Path) -> None:
    path = tmp_path / "f1.png"
    assert plot_metric(rows(), "f1", "learning_rate", "t", path, "num_train_epochs", METRICS) == 16
    height, width, _ = matplotlib.image.imread(path).shape
    assert (width, height) == (840, 540)  # 7 x 4.5 inches at 120 dpi


def test_the_constants_header_is_grouped_wrapped_and_complete_when_wide() -> None:
    constant: dict[str, Any] = {
        "model": "gpt-4o",
        "top_p": 1.0,
        "max_tokens": 256,
        **{f"param_{i:02d}": i for i in range(40)},
        "prompt_template": "Question: {question}\nContext: {context}\nAnswer the question from the context.",
    }
    short = constants_header(constant, "qa", ["squad"], 80, wide=False)
    assert short[0] == "the same in every row:"
    assert short[1] == "  generation: model=gpt-4o, top_p=1.0, max_tokens=256"
    assert short[2].startswith("  squad (qa): param_00=0, param_01=1,")
    assert len(short) == 2 + 3  # the training group cut at 3 lines
    assert short[-1].endswith("more (-o wide shows all)")
    assert all(len(line) <= 80 for line in short)
    wide = constants_header(constant, "qa", ["squad"], 80, wide=True)
    joined = " ".join(line.strip() for line in wide)
    assert all(f"param_{i:02d}={i}," in joined for i in range(40))
    assert "Answer the question from the context." in joined  # long values in full
    assert all(len(line) <= 80 for line in wide if "prompt_template" not in line)
    assert all(line.startswith("    ") for line in wide[3:])  # continuation lines indented under their group
    # no name of its own: the kind; several entries: their names
    assert constants_header({"lr": 1}, "qa", ["qa"], 80, wide=False)[1] == "  qa: lr=1"
    assert constants_header({"lr": 1}, "qa", ["a", "b"], 80, wide=False)[1] == "  a, b (qa): lr=1"


def sweep(workspace: Path) -> dict[str, Any]:
    """A realistic sweep on the fake worker: 2 temperatures x inner_lr over 2 decades x 2 inner step counts."""
    fake_model(workspace / "models" / "tiny")
    meta = {
        "name": "meta",
        "kind": "fomaml",
        "baseModel": {"path": "models/tiny"},
        "params": {
            "task_key": "id",
            "prompt_template": "{text}",
            "response_template": " {id}",
            "inner_lr": [1e-5, 3e-5, 1e-4, 1e-3],
            "num_inner_steps": [1, 2],
        },
    }
    return {
        "batch": "batch_20250101_scales",
        "datasets": copa_dataset(),
        "generation": generation(None, temperature=[0.5, 0.9]),
        "validation": {"model": "gpt-4o", "temperature": 0.0},
        "training": [meta],
        "objective": {"stage": "meta", "metric": "queryLossAfter", "goal": "minimize"},
    }


def test_results_draw_a_learning_rate_sweep_on_log_scales_and_refuse_a_bad_log(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # the header wraps at the terminal's width
    root = workspace / "root"
    path = write_experiment("scales", sweep(workspace))
    invoke("run", path, "--root", root, "-j", "4", "--worker-command", fake_worker_command())
    line = workspace / "line.png"
    args = ("results", "scales", "--root", root, "--plot", "queryLossAfter", "--axis", "inner_lr")
    drawn = invoke(*args, "--by", "num_inner_steps", "--out", line)
    assert f"wrote {line} (16 points)" in drawn.output
    assert line.read_bytes().startswith(b"\x89PNG")
    parallel = workspace / "parallel.png"
    drawn = invoke("results", "scales", "--root", root, "--plot-parallel", "queryLossAfter", "--out", parallel)
    assert f"wrote {parallel} (16 rows)" in drawn.output
    assert matplotlib.image.imread(parallel).shape[0] == 540
    refused = invoke(*args, "--log", "temperature", expect=2)
    assert "--log temperature: not drawn on an axis of this plot; its axes: inner_lr, queryLossAfter" in refused.output
    parallel_args = ("results", "scales", "--root", root, "--plot-parallel", "queryLossAfter")
    refused = invoke(*parallel_args, "--log", "phase", expect=2)
    assert "--log phase: not drawn on an axis of this plot" in refused.output
    refused = invoke("results", "scales", "--root", root, "--log", "inner_lr", expect=2)
    assert "--log: sets the scale of a plot; add --plot or --plot-parallel" in refused.output
    refused = invoke(*args, "--log", "nosuch", expect=2)
    assert "--log nosuch: no such column; columns:" in refused.output
    # the table's header: the shared settings grouped, each group on its own lines
    table = invoke("results", "scales", "--root", root).stdout.splitlines()
    assert table[0] == "the same in every row:"
    assert table[1].startswith("  generation: model=gpt-4o, top_p=1.0")
    assert table[2].startswith("  meta (fomaml): apply_chat_template=False, deduplicate=True,")
    assert table[4].endswith("more (-o wide shows all)")  # every training param the stage kept: 3 lines
    assert all(len(line) <= 100 for line in table[:5])
    assert table[5].startswith("experiment scales: 16 fomaml results")
    assert "task_key=id" not in "\n".join(table)
    wide = invoke("results", "scales", "--root", root, "-o", "wide").stdout
    assert "task_key=id" in wide
    assert 'response_template=" {id}"' in wide  # a value with its blank quoted
    assert "more (-o wide" not in wide
    rows_json = json.loads(invoke("results", "scales", "--root", root, "-o", "json").stdout)
    assert len(rows_json) == 16
    assert "INNER_LR" in wide
