"""training_curves.png: losses, learning rate and dev metrics on one readable figure."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from datasweep.store.atomic import atomic_write_bytes


def plot_training_curves(history: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = history.get("steps", [])
    train = history.get("train", [])
    evals = history.get("eval", [])
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    fig.suptitle("Extractive QA training", fontsize=14)

    ax = axes[0][0]
    if steps:
        ax.plot([s[0] for s in steps], [s[1] for s in steps], color="tab:blue", alpha=0.25, label="train loss (step)")
    if train:
        ax.plot(
            [r["step"] for r in train], [r["loss"] for r in train], ".-", color="tab:blue", label="train loss (mean)"
        )
    if evals:
        ax.plot(
            [r["step"] for r in evals],
            [r["eval_loss"] for r in evals],
            "o-",
            label="dev loss",
            color="tab:red",
        )
    ax.set_title("Loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")

    ax = axes[0][1]
    if steps:
        ax.plot([s[0] for s in steps], [s[2] for s in steps], color="tab:green", label="learning rate")
    ax.set_title("Learning rate (linear warmup, then decay)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")

    ax = axes[1][0]
    if evals:
        epochs = [r["epoch"] for r in evals]
        ax.plot(epochs, [r.get("tuned_f1", r["best_f1"]) for r in evals], "o-", label="F1 (tuned null threshold)")
        ax.plot(epochs, [r.get("tuned_exact", r["best_exact"]) for r in evals], "s-", label="EM (tuned null threshold)")
        ax.plot(epochs, [r["f1"] for r in evals], "o--", alpha=0.6, label="F1 (threshold 0)")
        ax.plot(epochs, [r["exact"] for r in evals], "s--", alpha=0.6, label="EM (threshold 0)")
    ax.set_title("Dev F1 / Exact Match")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")

    ax = axes[1][1]
    if evals:
        epochs = [r["epoch"] for r in evals]
        for key, label in (("HasAns_f1", "answerable F1"), ("NoAns_f1", "unanswerable F1")):
            if all(key in r for r in evals):
                ax.plot(epochs, [r[key] for r in evals], "o-", label=label)
    ax.set_title("Dev F1 by question type (threshold 0)")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
