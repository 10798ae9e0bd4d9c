"""training_curves.png of moe-steer: the expert-only training's loss per step and per epoch, and its
learning rate (drawn by `workloads.curves`)."""

from __future__ import annotations

import itertools
from pathlib import Path

from datasweep.workloads.curves import CURVES_FILE, Panel, Series, plot_panels
from datasweep.workloads.moe_steer.training import TrainingResult


def plot_moe_steer_curves(result: TrainingResult, output_dir: Path) -> Path:
    steps = list(range(1, result.steps + 1))
    epoch_ends = list(itertools.accumulate(len(order) for order in result.batch_order if order))
    panels = [
        Panel(
            "Training loss (selected experts only)",
            "optimizer step",
            "loss",
            [
                Series("loss (step)", steps, result.losses, ".-", "tab:blue", alpha=0.5),
                Series("loss (epoch mean)", epoch_ends, result.epoch_losses, "o-", "tab:red"),
            ],
        ),
        Panel(
            "Learning rate",
            "optimizer step",
            "learning rate",
            [Series("learning rate", steps, result.learning_rates, "-", "tab:green")],
            sci_y=True,
        ),
    ]
    path = output_dir / CURVES_FILE
    plot_panels("moe-steer expert training", panels, path)
    return path
