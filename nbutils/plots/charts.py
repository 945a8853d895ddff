"""Figures for the notebooks: one style, one colour scheme, atomic PNG export.

Every plotting function returns a ``matplotlib.figure.Figure`` created through pyplot, so it
displays inline in Jupyter; nothing here calls ``plt.show()``. Figures use constrained layout
rather than ``bbox_inches="tight"`` so that a saved PNG is exactly ``figsize * dpi`` pixels.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nbutils.config import RunConfig
from nbutils.metrics import Classes, interval_key, label, run_classes, value
from nbutils.phase import THRESHOLD
from nbutils.results import PAPER_TEST_ACC
from nbutils.runs import atomic_write, figure_path

__all__ = [
    "coarse_palette",
    "fine_palette",
    "plot_confusion",
    "plot_grid_heatmap",
    "plot_nc_over_epochs",
    "plot_recovery_over_epochs",
    "plot_recovery_variants",
    "plot_results_table",
    "plot_training_curves",
    "plot_umap",
    "plot_umap_grid",
    "save_fig",
    "set_style",
]

MIN_DPI = 150
RGB = tuple[float, float, float]
FineToCoarse = Sequence[int] | Mapping[int, int] | np.ndarray

# tab10's first five hues (blue, orange, green, red, purple) stay apart even when shaded;
# each super-class owns one hue and its fine classes get light-to-dark shades of it.
_BASE_PALETTE = "tab10"
_MAX_BASE_COLOURS = 10


def set_style() -> None:
    """Apply the project's seaborn whitegrid/paper style to matplotlib's rcParams."""
    sns.set_theme(context="paper", style="whitegrid", palette=coarse_palette(5))
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": MIN_DPI,
            "figure.constrained_layout.use": True,
            "legend.frameon": False,
            "axes.titleweight": "bold",
        }
    )


def save_fig(fig: Figure, where: RunConfig | str | os.PathLike[str], name: str,
             dpi: int = MIN_DPI) -> None:
    """Save `fig` as `name`.png in a run's figures folder, or in a folder, atomically.

    In a notebook the inline backend shows the figure at the end of the cell; returning it
    as well would show it twice.
    """
    if dpi < MIN_DPI:
        raise ValueError(f"dpi: must be at least {MIN_DPI}, got {dpi}")
    if not re.fullmatch(r"[\w.-]+", name) or name.endswith(".png"):
        raise ValueError(f"name: a file name without folder or extension, got {name!r}")
    path = figure_path(where, name) if isinstance(where, RunConfig) else Path(where) / f"{name}.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


# --------------------------------------------------------------------------- colours


def coarse_palette(n: int) -> list[RGB]:
    """Return ``n`` distinct super-class colours (tab10, evenly spaced husl hues beyond 10)."""
    if n <= _MAX_BASE_COLOURS:
        return [tuple(c) for c in sns.color_palette(_BASE_PALETTE, n)]
    return [tuple(c) for c in sns.color_palette("husl", n)]


def _shades(colour: RGB, m: int) -> list[RGB]:
    """Return ``m`` shades of one hue, light to dark, by mixing with white then black."""
    if m == 1:
        return [colour]
    # Mixing toward white or black keeps the hue, so the shades read as one family.
    amounts = np.linspace(-0.55, 0.3, m)
    base = np.asarray(colour)
    out = []
    for a in amounts:
        target = np.ones(3) if a < 0 else np.zeros(3)
        out.append(tuple(float(v) for v in base + abs(a) * (target - base)))
    return out


def _as_fine_to_coarse(fine_to_coarse: FineToCoarse) -> np.ndarray:
    """Return the fine -> super-class mapping as an int array indexed by fine label."""
    if isinstance(fine_to_coarse, Mapping):
        n = max(fine_to_coarse) + 1
        return np.array([fine_to_coarse[i] for i in range(n)], dtype=int)
    return np.asarray(fine_to_coarse, dtype=int)


def fine_palette(fine_to_coarse: FineToCoarse) -> list[RGB]:
    """Colour each fine class with a shade of its super-class colour (ordered by fine label)."""
    mapping = _as_fine_to_coarse(fine_to_coarse)
    bases = coarse_palette(int(mapping.max()) + 1)
    colours: list[RGB] = [(0.0, 0.0, 0.0)] * len(mapping)
    for s, base in enumerate(bases):
        members = np.flatnonzero(mapping == s)
        for fine, shade in zip(members, _shades(base, len(members)), strict=True):
            colours[fine] = shade
    return colours


# --------------------------------------------------------------------------- helpers


def _series(entries: Sequence[Mapping[str, Any]], dotted: str) -> np.ndarray:
    """The number at `dotted` in every entry, NaN where it is missing."""
    return np.asarray([value(entry, dotted) for entry in entries], dtype=float)


def _grid(n: int, ncols: int, panel: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    """Create a figure with ``n`` visible panels in rows of ``ncols``; extra cells are hidden."""
    set_style()
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _note_if_empty(ax: Axes) -> None:
    """Write "not available" on a panel that received no finite data."""
    if not ax.lines or all(np.all(~np.isfinite(line.get_ydata())) for line in ax.lines):
        ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes,
                color="0.5")


def _percent_axis(ax: Axes) -> None:
    """Format an axis holding fractions as percentages."""
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(xmax=1.0, decimals=0))


def _log_axis(ax: Axes) -> None:
    """Use a log y axis when the data are positive, labelling 2x and 5x ticks on short ranges."""
    y = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.lines] or [[]])
    y = y[np.isfinite(y)]
    if y.size == 0 or y.min() <= 0:
        return
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    # Under two decades, major ticks alone leave the axis with one or two labels.
    if np.log10(y.max() / y.min()) < 2:
        ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
        ax.yaxis.set_minor_formatter(plain)
    else:
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


# --------------------------------------------------------------------------- training


def plot_training_curves(logs: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure:
    """Plot loss, accuracy and learning rate per epoch for each model (train solid, test dashed,
    clean train accuracy dotted where it was logged, with the terminal phase's threshold)."""
    fig, (ax_loss, ax_acc, ax_lr) = _grid(3, 3, (4.0, 3.0))
    colours = coarse_palette(max(len(logs), 1))
    clean_logged = False
    for (name, log), colour in zip(logs.items(), colours, strict=False):
        epochs = _series(log, "epoch")
        for split, style in (("train", "-"), ("test", "--")):
            label = f"{name}, {split}"
            for ax, key in ((ax_loss, f"{split}_loss"), (ax_acc, f"{split}_acc")):
                values = _series(log, key)
                # Epochs without a test evaluation (eval_every > 1) are left out, not gaps.
                kept = np.isfinite(values)
                ax.plot(epochs[kept], values[kept], style, color=colour, label=label)
        clean = _series(log, "clean_train_acc")
        kept = np.isfinite(clean)
        if kept.any():
            # Logged at checkpoints with clean_train_eval: what the terminal phase is read from.
            ax_acc.plot(epochs[kept], clean[kept], "o:", color=colour, markersize=3,
                        label=f"{name}, train (eval mode, clean)")
            clean_logged = True
        ax_lr.plot(epochs, _series(log, "lr"), "-", color=colour, label=name)
    if clean_logged:
        ax_acc.axhline(THRESHOLD, color="grey", linewidth=0.8, linestyle="-.",
                       label=f"terminal phase ({100 * THRESHOLD:.1f}%)")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    _percent_axis(ax_acc)
    ax_lr.set(title="Learning rate", xlabel="epoch", ylabel="learning rate")
    if logs:
        ax_acc.legend(loc="lower right", fontsize="small")
    for ax in (ax_loss, ax_acc, ax_lr):
        _note_if_empty(ax)
    return fig


# --------------------------------------------------------------------------- neural collapse

# (title, group in each entry's "nc" dict or "" for coarse and fine, metric key, log y axis)
_NC_PANELS: tuple[tuple[str, str, str, bool], ...] = (
    ("NC1  tr(Σ_W Σ_B⁺)/K", "", "nc1", True),
    ("NC2  equinorm (CV of norms)", "", "nc2_equinorm", False),  # "_head" variant dashed
    ("NC2  equiangularity", "", "nc2_equiangular", False),
    ("NC2  distance to simplex ETF", "", "nc2_etf_distance", False),
    ("NC3  head vs class means", "", "nc3", False),
    ("NC4  head ≠ nearest class mean", "", "nc4", False),
    (label("nc.fine_structure.nc1_within_superclass_mean"), "fine_structure",
     "nc1_within_superclass_mean", True),
    (label("nc.fine_structure.fine_variance_fraction_mean"), "fine_structure",
     "fine_variance_fraction_mean", False),
)


def plot_nc_over_epochs(history: Sequence[Mapping[str, Any]], classes: Classes) -> Figure:
    """Plot each Neural Collapse metric over epochs, coarse and fine labels as two lines."""
    fig, axes = _grid(len(_NC_PANELS), 4, (3.2, 2.6))
    palette = coarse_palette(3)
    epochs = _series(history, "epoch")
    for ax, (title, group, key, log) in zip(axes, _NC_PANELS, strict=True):
        lines = [(group, "fine classes within each super-class", palette[2])] if group else [
            ("coarse", f"coarse labels (K={classes.n_coarse})", palette[0]),
            ("fine", f"fine labels (K={classes.n_fine})", palette[1]),
        ]
        for subset, what, colour in lines:
            for suffix, style, name in (("", "o-", what), ("_head", "s--", f"{what}, head rows")):
                y = _series(history, f"nc.{subset}.{key}{suffix}")
                if np.isfinite(y).any():
                    ax.plot(epochs, y, style, ms=3, color=colour, label=name)
        if log:
            _log_axis(ax)
        ax.set(title=title, xlabel="epoch")
        ax.title.set_fontsize("small")
        _note_if_empty(ax)
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(name, handle)
    if legend:
        fig.legend(legend.values(), legend.keys(), loc="outside lower center",
                   ncols=min(len(legend), 3))
    return fig


# --------------------------------------------------------------------------- recovery

_RECOVERY_ACC = ("recovery.train_cluster_acc", "recovery.test_acc_true_coarse",
                 "recovery.test_acc_pred_coarse", "recovery.linear_probe_test_acc")
_RECOVERY_AGREEMENT = ("recovery.nmi", "recovery.ari", "recovery.nmi_within_superclass")


def plot_recovery_over_epochs(
    history: Sequence[Mapping[str, Any]],
    controls: Mapping[str, float],
    baseline_test_acc: float | None,
    classes: Classes,
    *,
    chance: float = 0.5,
) -> Figure:
    """Plot fine-label recovery accuracy (and NMI/ARI) over epochs against reference lines."""
    fig, (ax_acc, ax_agree) = _grid(2, 2, (4.8, 3.4))
    epochs = _series(history, "epoch")
    colours = sns.color_palette(_BASE_PALETTE, 10)
    for key, colour in zip(_RECOVERY_ACC, colours, strict=False):
        ax_acc.plot(epochs, _series(history, key), "o-", ms=3, color=colour,
                    label=label(key, classes))
    greys = sns.color_palette("Greys", len(controls) + 2)[2:]
    for (name, level), grey in zip(controls.items(), greys, strict=True):
        ax_acc.axhline(level, color=grey, ls="--", lw=1, label=f"{name} ({level:.1%})")
    ax_acc.axhline(chance, color="0.3", ls=":", lw=1, label=f"chance for (a) ({chance:.0%})")
    if baseline_test_acc is not None:
        ax_acc.axhline(baseline_test_acc, color="black", ls="-.", lw=1.2,
                       label=f"{label('baseline.test_acc', classes)} ({baseline_test_acc:.1%})")
    ax_acc.set(title="Fine-label recovery", xlabel="epoch",
               ylabel=f"{classes.n_fine}-way accuracy")
    _percent_axis(ax_acc)
    for key, colour in zip(_RECOVERY_AGREEMENT, colours[4:], strict=False):
        values = _series(history, key)
        # Results from before a metric existed lack it; no empty legend entry for those.
        if np.isfinite(values).any():
            ax_agree.plot(epochs, values, "o-", ms=3, color=colour, label=label(key))
    ax_agree.set(title="Cluster agreement", xlabel="epoch", ylabel="score", ylim=(0, 1.02))
    handles, labels = ax_acc.get_legend_handles_labels()
    more_handles, more_labels = ax_agree.get_legend_handles_labels()
    fig.legend(handles + more_handles, labels + more_labels, loc="outside right upper",
               fontsize="small")
    for ax in (ax_acc, ax_agree):
        _note_if_empty(ax)
    return fig


# --------------------------------------------------------------------------- matrices, tables


def _confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """Count (true, predicted) pairs into an ``n`` x ``n`` matrix, rows indexed by true label."""
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return counts


def plot_confusion(
    y_true: np.ndarray | Sequence[int],
    y_pred: np.ndarray | Sequence[int],
    class_names: list[str],
    normalize: bool = True,
    title: str = "",
) -> Figure:
    """Draw the confusion matrix as an annotated heat-map (rows: true, row-normalised if asked)."""
    set_style()
    n = len(class_names)
    counts = _confusion_matrix(np.asarray(y_true), np.asarray(y_pred), n)
    if normalize:
        rows = counts.sum(axis=1, keepdims=True)
        matrix = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    else:
        matrix = counts
    side = min(max(4.0, 0.55 * n + 1.5), 16.0)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    # Annotations become unreadable beyond ~20 classes (e.g. CIFAR-100).
    sns.heatmap(matrix, ax=ax, annot=n <= 20, fmt=".2f" if normalize else "d", cmap="Blues",
                vmin=0, vmax=1 if normalize else None, square=True, cbar=False,
                xticklabels=class_names, yticklabels=class_names, annot_kws={"size": 7})
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)
    return fig


def plot_results_table(rows: Sequence[tuple[str, str]], title: str = "") -> Figure:
    """Render a two-column (quantity, value) table as a figure."""
    set_style()
    cells = [[str(q), str(v)] for q, v in rows] or [["(no results)", ""]]
    fig, ax = plt.subplots(figsize=(7.0, 0.3 * (len(cells) + 1) + (0.4 if title else 0.1)))
    ax.axis("off")
    # bbox makes the table fill the axes, so the figure height alone sets the row height.
    table = ax.table(cellText=cells, colLabels=["Quantity", "Value"], bbox=(0, 0, 1, 1),
                     cellLoc="left", colLoc="left", colWidths=[0.72, 0.28])
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    for (row, _), cell in table.get_celld().items():
        cell.set_edgecolor("0.85")
        cell.PAD = 0.03
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("0.92")
    if title:
        ax.set_title(title)
    return fig


def plot_grid_heatmap(
    values: np.ndarray,
    row_labels: Sequence[Any],
    col_labels: Sequence[Any],
    title: str,
    fmt: str = ".1%",
    *,
    xlabel: str = "",
    ylabel: str = "",
) -> Figure:
    """Draw a hyper-parameter grid (e.g. learning rate x weight decay) as an annotated heat-map."""
    set_style()
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(1.1 * values.shape[1] + 2.2, 0.8 * values.shape[0] + 1.4))
    # Unfinished runs are NaN: seaborn leaves those cells blank.
    sns.heatmap(values, ax=ax, annot=True, fmt=fmt, cmap="viridis", cbar=False,
                xticklabels=[str(c) for c in col_labels], yticklabels=[str(r) for r in row_labels])
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.tick_params(axis="y", labelrotation=0)
    return fig


# --------------------------------------------------------------------------- UMAP


def _local_labels(labels: np.ndarray, n_names: int) -> np.ndarray:
    """Map labels to 0..n_names-1: kept if already in range, else ranked among unique values."""
    labels = np.asarray(labels, dtype=int)
    if labels.size == 0 or (labels.min() >= 0 and labels.max() < n_names):
        return labels
    return np.searchsorted(np.unique(labels), labels)


def _scatter(ax: Axes, embedding: np.ndarray, labels: np.ndarray, names: Sequence[str],
             palette: Sequence[Any]) -> None:
    """Scatter an embedding on ``ax``, one colour and legend entry per label."""
    size = float(np.clip(4000.0 / max(len(embedding), 1), 0.5, 12.0))
    for k, name in enumerate(names):
        pts = embedding[labels == k]
        ax.scatter(pts[:, 0], pts[:, 1], s=size, color=palette[k], label=name, alpha=0.7,
                   linewidths=0, rasterized=True)
    ax.set(xticks=[], yticks=[], xlabel="UMAP 1", ylabel="UMAP 2")
    ax.set_aspect("equal", adjustable="datalim")


def _legend(ax: Axes, **kwargs: Any) -> None:
    """Add a legend whose markers stay readable however small the scatter points are."""
    legend = ax.legend(**kwargs)
    for handle in legend.legend_handles:
        handle.set_sizes([25.0])
        handle.set_alpha(1.0)


def plot_umap(
    embedding: np.ndarray,
    labels: np.ndarray | Sequence[int],
    label_names: list[str],
    title: str = "",
    palette: Sequence[Any] | None = None,
) -> Figure:
    """Scatter a 2-D embedding coloured by label, legend outside the axes."""
    set_style()
    palette = coarse_palette(len(label_names)) if palette is None else palette
    fig, ax = plt.subplots(figsize=(6.5, 5.0))
    _scatter(ax, np.asarray(embedding), _local_labels(labels, len(label_names)), label_names,
             palette)
    ax.set_title(title)
    _legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return fig


def plot_umap_grid(
    embeddings: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    label_names: Sequence[Sequence[str]],
    titles: Sequence[str],
    palettes: Sequence[Sequence[Any]] | None = None,
) -> Figure:
    """One UMAP panel per super-class, coloured by fine label in shades of its super-class."""
    n = len(embeddings)
    fig, axes = _grid(n, 5, (3.2, 3.2))
    if palettes is None:
        palettes = [_shades(base, len(names))
                    for base, names in zip(coarse_palette(n), label_names, strict=True)]
    for ax, emb, lab, names, title, pal in zip(
        axes, embeddings, labels, label_names, titles, palettes, strict=True
    ):
        _scatter(ax, np.asarray(emb), _local_labels(lab, len(names)), names, pal)
        ax.set_title(title)
        ax.set(xlabel="", ylabel="")
        # Below the panel: loc="best" is slow on thousands of points and may hide a cluster.
        _legend(ax, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=min(len(names), 3),
                fontsize="x-small", handletextpad=0.2, columnspacing=0.8)
    return fig


# --------------------------------------------------------------------------- recovery variants

_VARIANTS = ("recovery.test_acc_true_coarse", "recovery.test_acc_pred_coarse",
             "recovery.test_cluster_acc_true_coarse", "recovery.test_cluster_acc_pred_coarse",
             "baseline.test_acc", "controls.random_init.test_acc_true_coarse")


def plot_recovery_variants(res: Mapping[str, Any], paper_acc: float | None = None) -> Figure:
    """Bars of the test variants (a)-(d), the fine-label baseline and the random-init control.

    Error bars are the records' 95% bootstrap intervals (`ci95`); a dashed line marks the
    paper's accuracy (default `nbutils.results.PAPER_TEST_ACC`); a quantity the record lacks is
    written "not computed" where its bar would be, not drawn as zero.
    """
    if paper_acc is None:
        # Imported here: nbutils.results imports this module (through nbutils.analysis).
        paper_acc = PAPER_TEST_ACC
    fig, (ax,) = _grid(1, 1, (8.0, 4.0))
    found = []
    for i, key in enumerate(_VARIANTS):
        ci = [value(res, f"{interval_key(key)}.{j}") for j in (0, 1)]
        found.append((i, value(res, key), None if math.isnan(ci[0] + ci[1]) else ci))
    shown = [(i, v, ci) for i, v, ci in found if np.isfinite(v)]
    colours = coarse_palette(4) + [(0.2, 0.2, 0.2), (0.65, 0.65, 0.65)]
    if shown:
        x = np.array([i for i, _, _ in shown], dtype=float)
        heights = np.array([v for _, v, _ in shown])
        # Bars without an interval get a zero-length error bar.
        low = np.array([v - (ci[0] if ci else v) for _, v, ci in shown])
        high = np.array([(ci[1] if ci else v) - v for _, v, ci in shown])
        ax.bar(x, heights, yerr=np.stack([low, high]), capsize=4, width=0.65,
               color=[colours[i] for i, _, _ in shown], error_kw={"lw": 1.2})
    lows = [ci[0] if ci else v for _, v, ci in shown]
    bottom = max(0.0, np.floor((min(lows + [paper_acc]) - 0.05) * 10) / 10)
    ax.set_ylim(bottom, 1.02)
    # Values written inside the bars, clear of the error bars and the paper's line.
    for i, v, _ in shown:
        ax.text(i, bottom + 0.01, f"{v:.1%}", ha="center", va="bottom", fontsize="small",
                color="white" if i < 5 else "black", weight="bold")
    for i, v, _ in found:
        if not np.isfinite(v):
            ax.text(i, (bottom + 1.0) / 2, "not\ncomputed", ha="center", va="center",
                    color="0.45", fontsize="small")
    ax.axhline(paper_acc, color="black", ls="--", lw=1,
               label=f"paper (Yang et al. 2023): {paper_acc:.0%}")
    run = run_classes(res)
    ax.set_xticks(range(len(_VARIANTS)), [textwrap.fill(label(k, run), 20) for k in _VARIANTS],
                  fontsize="x-small")
    ax.set(title="Fine-label recovery on the test set, with 95% bootstrap intervals",
           ylabel=f"{run.n_fine}-way test accuracy", xlim=(-0.6, len(_VARIANTS) - 0.4))
    _percent_axis(ax)
    ax.grid(False, axis="x")
    ax.legend(loc="upper right", fontsize="small")
    return fig
