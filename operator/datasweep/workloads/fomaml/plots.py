"""training_curves.png of fomaml, drawn from the files training writes (so a resumed run draws them whole):
meta-train losses and learning rate per meta-step (metrics.jsonl), and the few-shot query loss and token
accuracy before and after adaptation at every evaluation (eval_history.jsonl, then eval_results.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasweep.workloads.curves import CURVES_FILE, Panel, Series, plot_panels

METRICS = "metrics.jsonl"
EVAL_HISTORY = "eval_history.jsonl"
EVAL_RESULTS = "eval_results.json"


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluations(output_dir: Path) -> list[dict[str, Any]]:
    """Every few-shot evaluation in step order: the periodic ones, then the final one."""
    rows = _lines(output_dir / EVAL_HISTORY)
    final = output_dir / EVAL_RESULTS
    if final.is_file():
        rows.append(json.loads(final.read_text(encoding="utf-8")))
    return sorted(rows, key=lambda row: int(row["step"]))


def _series(rows: list[dict[str, Any]], key: str, label: str, style: str, color: str | None = None) -> Series:
    kept = [row for row in rows if row.get(key) is not None]
    return Series(label, [row["step"] for row in kept], [row[key] for row in kept], style, color)


def plot_fomaml_curves(output_dir: Path) -> Path:
    steps = _lines(output_dir / METRICS)
    evals = evaluations(output_dir)
    panels = [
        Panel(
            "Meta-train loss",
            "meta-step",
            "loss",
            [
                _series(steps, "query_loss", "query loss (after adaptation)", ".-", "tab:red"),
                _series(steps, "support_loss", "support loss (before adaptation)", ".-", "tab:blue"),
            ],
        ),
        Panel(
            "Outer optimizer",
            "meta-step",
            "learning rate",
            [_series(steps, "lr", "outer learning rate", "-", "tab:green")],
            sci_y=True,
        ),
        Panel(
            "Few-shot test loss",
            "meta-step",
            "loss",
            [
                _series(evals, "mean_before_loss", "before adaptation", "o--", "tab:blue"),
                _series(evals, "mean_after_loss", "after adaptation", "o-", "tab:red"),
            ],
        ),
        Panel(
            "Few-shot token accuracy",
            "meta-step",
            "token accuracy",
            [
                _series(evals, "mean_before_token_accuracy", "before adaptation", "s--", "tab:blue"),
                _series(evals, "mean_after_token_accuracy", "after adaptation", "s-", "tab:red"),
            ],
            ylim=(0, 1),
        ),
    ]
    path = output_dir / CURVES_FILE
    plot_panels("First-order MAML", panels, path)
    return path
