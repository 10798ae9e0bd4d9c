"""training_curves.png of every training stage: panels of line series on one readable figure.

Each stage says what to draw (its losses, learning rate, evaluation metrics) as `Panel`s of `Series`; this
module draws them the same way for all of them and writes the PNG atomically (a reader never sees half a
file). matplotlib is imported here only, so stages that never plot do not pay for it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasweep.store.atomic import atomic_write_bytes

CURVES_FILE = "training_curves.png"


@dataclass(frozen=True)
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    style: str = "-"  # a matplotlib format string: "o-", "s--", ...
    color: str | None = None
    alpha: float = 1.0


@dataclass(frozen=True)
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: Sequence[Series] = field(default_factory=tuple)
    ylim: tuple[float, float] | None = None
    integer_x: bool = False  # epochs: no 1.5 ticks
    sci_y: bool = False  # learning rates: 1e-5, not 0.00001


def plot_panels(title: str, panels: Sequence[Panel], path: Path, columns: int = 2) -> None:
    """Draw `panels` on a grid (`columns` wide) under `title` and write the PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = max(1, -(-len(panels) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), constrained_layout=True, squeeze=False)
    fig.suptitle(title, fontsize=14)
    for index, ax in enumerate(axes.flat):
        if index >= len(panels):
            ax.set_visible(False)
            continue
        panel = panels[index]
        for s in panel.series:
            if len(s.x):
                ax.plot(list(s.x), list(s.y), s.style, color=s.color, alpha=s.alpha, label=s.label)
        ax.set_title(panel.title)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        if panel.integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if panel.sci_y:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
