"""Figures of the merged pairs and their counterfactual controls (nbutils.pairs, notebook 08).

Both take the rows of `pairs.pair_summary` (one per mapping and pair, spread over seeds): the
merged pair's recovery beside its separability where it is not merged (the fine-label baseline),
in the random-init network and in raw pixels, and the merged recovery against each control.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nbutils import checks
from nbutils.pairs import CONTROLS, SOURCES, SPLITS
from nbutils.plots.charts import coarse_palette, set_style

MARKERS = {"merged": "o", "baseline": "s", "random_init": "^", "raw_pixels": "x"}
SPLIT_LABELS = {"train": "train clustering", "test": "test, train centroids (a)"}


def _percent(axis: Any) -> None:
    """Fractions shown as percentages on one axis."""
    axis.set_major_formatter(matplotlib.ticker.PercentFormatter(xmax=1.0, decimals=0))


def _stat(row: dict[str, Any], source: str, split: str, key: str) -> float:
    """One statistic (mean, sd) of a source in a pair_summary row; NaN when not measured."""
    cell = row.get(source)
    value = None if cell is None else cell[split][key]
    return np.nan if value is None else float(value)


def plot_pair_controls(rows: Sequence[dict[str, Any]], title: str, split: str = "test",
                       chance: float = 0.5) -> Figure:
    """Every merged pair (lowest merged recovery first) with its three controls; bars: sd."""
    checks.choice("split", split, SPLITS)
    set_style()
    rows = sorted(rows, key=lambda r: _stat(r, "merged", split, "mean"))
    fig, ax = plt.subplots(figsize=(7.2, 0.32 * len(rows) + 1.8))
    y = np.arange(len(rows))
    offsets = np.linspace(-0.24, 0.24, len(SOURCES))
    for (source, label), colour, dy in zip(SOURCES.items(), coarse_palette(len(SOURCES)),
                                           offsets, strict=True):
        mean = np.asarray([_stat(r, source, split, "mean") for r in rows])
        sd = np.nan_to_num([_stat(r, source, split, "sd") for r in rows])
        if np.isfinite(mean).any():
            ax.errorbar(mean, y + dy, xerr=sd, fmt=MARKERS[source], ms=4, capsize=2,
                        color=colour, label=label)
    ax.axvline(chance, color="0.4", ls="--", lw=1, label="chance")
    ax.set_yticks(y, [f"{r['pair']} ({r['mapping']}, n={len(r['seeds'])})" for r in rows],
                  fontsize=7)
    _percent(ax.xaxis)
    ax.set(xlabel=f"k-means accuracy inside the pair, {SPLIT_LABELS[split]}", title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _lower_limit(rows: Sequence[dict[str, Any]], split: str) -> float:
    """0.4, or lower to the nearest 5% below the smallest mean any source reaches."""
    means = [_stat(r, s, split, "mean") for r in rows for s in SOURCES]
    low = np.nanmin(means + [0.4])
    return min(0.4, np.floor((low - 0.02) * 20) / 20)


def _scatter_panel(ax: Axes, rows: Sequence[dict[str, Any]], source: str, split: str,
                   fit: dict[str, Any] | None, colours: dict[str, Any]) -> None:
    """Merged recovery against one control, a dot per (mapping, pair), with its correlation."""
    lims = (_lower_limit(rows, split), 1.0)
    for row in rows:
        x, y = _stat(row, source, split, "mean"), _stat(row, "merged", split, "mean")
        if np.isfinite(x) and np.isfinite(y):
            ax.errorbar(x, y, xerr=np.nan_to_num(_stat(row, source, split, "sd")),
                        yerr=np.nan_to_num(_stat(row, "merged", split, "sd")), fmt="o", ms=4,
                        capsize=2, color=colours[row["mapping"]])
    ax.plot(lims, lims, color="0.5", ls=":", lw=1)
    if fit and fit["slope"] is not None:
        ax.plot(lims, [fit["intercept"] + fit["slope"] * v for v in lims], color="0.2", lw=1)
        note = (f"Pearson r = {fit['pearson']:.2f}\nSpearman ρ = {fit['spearman']:.2f}\n"
                f"{fit['n_pairs']} pairs")
    else:
        n = fit["n_pairs"] if fit else 0
        why = "too few for a correlation" if n < 3 else "a constant series, no correlation"
        note = f"{n} pairs: {why}"
    ax.text(0.03, 0.97, note, transform=ax.transAxes, va="top", fontsize=7)
    ax.set(xlim=lims, ylim=lims, xlabel=SOURCES[source])
    _percent(ax.xaxis)
    _percent(ax.yaxis)


def plot_merged_vs_controls(rows: Sequence[dict[str, Any]], corr: dict[str, dict[str, Any]],
                            title: str, split: str = "test") -> Figure:
    """Merged recovery of each pair against its separability in each control, one panel each."""
    checks.choice("split", split, SPLITS)
    set_style()
    mappings = list(dict.fromkeys(r["mapping"] for r in rows))
    colours = dict(zip(mappings, coarse_palette(len(mappings)), strict=True))
    fig, axes = plt.subplots(1, len(CONTROLS), figsize=(4.0 * len(CONTROLS), 4.2), sharey=True)
    for ax, source in zip(axes, CONTROLS, strict=True):
        _scatter_panel(ax, rows, source, split, corr.get(source), colours)
    axes[0].set_ylabel(f"{SOURCES['merged']}, {SPLIT_LABELS[split]}")
    handles = [plt.Line2D([], [], marker="o", ls="", color=colours[m]) for m in mappings]
    lines = [plt.Line2D([], [], color="0.5", ls=":", lw=1),
             plt.Line2D([], [], color="0.2", lw=1)]
    fig.legend(handles + lines, [*mappings, "y = x", "least-squares line"], fontsize=7,
               loc="outside right upper")
    fig.suptitle(title, fontsize=9, fontweight="bold")
    return fig


def pair_figures(rows: Sequence[dict[str, Any]], corr: dict[str, dict[str, Any]],
                 setting: str, split: str = "test") -> dict[str, Figure]:
    """The figures of notebook 08's pair controls, by file name."""
    return {
        "hierarchies_pair_controls": plot_pair_controls(
            rows, f"each merged pair beside its counterfactual controls (mean ± sd over seeds)"
                  f"\n{setting}", split),
        "hierarchies_pair_vs_controls": plot_merged_vs_controls(
            rows, corr, f"merged-pair recovery against the pair's separability elsewhere "
                        f"(a dot per mapping and pair)\n{setting}", split),
    }
