"""training_curves.png of qa: losses, learning rate and dev metrics (drawn by `workloads.curves`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasweep.workloads.curves import Panel, Series, plot_panels


def plot_training_curves(history: dict[str, Any], path: Path) -> None:
    steps = history.get("steps", [])
    train = history.get("train", [])
    evals = history.get("eval", [])
    epochs = [r["epoch"] for r in evals]
    loss = Panel(
        "Loss",
        "optimizer step",
        "loss",
        [
            Series("train loss (step)", [s[0] for s in steps], [s[1] for s in steps], color="tab:blue", alpha=0.25),
            Series("train loss (mean)", [r["step"] for r in train], [r["loss"] for r in train], ".-", "tab:blue"),
            Series("dev loss", [r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", "tab:red"),
        ],
    )
    lr = Panel(
        "Learning rate (linear warmup, then decay)",
        "optimizer step",
        "learning rate",
        [Series("learning rate", [s[0] for s in steps], [s[2] for s in steps], color="tab:green")],
        sci_y=True,
    )
    scores = Panel(
        "Dev F1 / Exact Match",
        "epoch",
        "score (%)",
        [
            Series("F1 (tuned null threshold)", epochs, [r.get("tuned_f1", r["best_f1"]) for r in evals], "o-"),
            Series("EM (tuned null threshold)", epochs, [r.get("tuned_exact", r["best_exact"]) for r in evals], "s-"),
            Series("F1 (threshold 0)", epochs, [r["f1"] for r in evals], "o--", alpha=0.6),
            Series("EM (threshold 0)", epochs, [r["exact"] for r in evals], "s--", alpha=0.6),
        ],
        ylim=(0, 100),
        integer_x=True,
    )
    by_type = Panel(
        "Dev F1 by question type (threshold 0)",
        "epoch",
        "F1 (%)",
        [
            Series(label, epochs, [r[key] for r in evals], "o-")
            for key, label in (("HasAns_f1", "answerable F1"), ("NoAns_f1", "unanswerable F1"))
            if evals and all(key in r for r in evals)
        ],
        ylim=(0, 100),
        integer_x=True,
    )
    plot_panels("Extractive QA training", [loss, lr, scores, by_type], path)
