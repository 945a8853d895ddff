"""Figures of the experiments (notebooks 06-10, 12): seeds as a mean line with a band or error bars.

Every figure carries the setting it was made with (profile, width, data, epochs, seeds) in its
title, as the experiments' results are only meaningful at that scale.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

from nbutils.metrics import label, run_classes, value
from nbutils.plots.charts import coarse_palette, plot_grid_heatmap, set_style
from nbutils.summaries import group_by, run_setting
from nbutils.synthetic import history_series


def _percent(ax: Any) -> None:
    """Fractions shown as percentages."""
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(xmax=1.0, decimals=0))


def plot_series_band(
    epochs: Sequence[int], series: dict[str, dict[str, Any]], title: str, ylabel: str,
    tpt: Sequence[int | None] = (), percent: bool = False, log: bool = False,
) -> Figure:
    """Mean over seeds with a min-max band per series; dotted lines where seeds reach 100%."""
    set_style()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    x = np.asarray(epochs)
    for (name, s), colour in zip(series.items(), coarse_palette(len(series)), strict=True):
        per_seed = np.asarray(s["per_seed"], dtype=float)
        ax.plot(x, per_seed.mean(axis=0), marker="o", ms=3, color=colour, label=name)
        if len(per_seed) > 1:
            ax.fill_between(x, per_seed.min(axis=0), per_seed.max(axis=0), color=colour,
                            alpha=0.2, lw=0)
    reached = sorted({t for t in tpt if t is not None})
    for i, t in enumerate(reached):
        ax.axvline(t, color="0.3", ls=":", lw=1,
                   label="coarse train acc. reaches 100% (a seed)" if i == 0 else None)
    if tpt and not reached:
        ax.text(0.99, 0.02, "coarse train accuracy never reaches 100%", transform=ax.transAxes,
                ha="right", va="bottom", color="0.4", fontsize=8)
    if log:
        ax.set_yscale("log")
    if percent:
        _percent(ax)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    return fig


def plot_grouped_bars(
    groups: Sequence[str], metrics: dict[str, Sequence[dict[str, Any]]], title: str,
    ylabel: str, points: dict[str, Sequence[Sequence[float]]] | None = None,
    percent: bool = True, chance: float | None = None, ylim: tuple[float, float] | None = None,
) -> Figure:
    """Bars of the mean per group and metric, error bars min-max over seeds, seeds as dots."""
    set_style()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) * max(1, len(metrics)) / 2), 4.2))
    width = 0.8 / len(metrics)
    x = np.arange(len(groups))
    for i, ((name, stats), colour) in enumerate(
            zip(metrics.items(), coarse_palette(len(metrics)), strict=True)):
        pos = x + (i - (len(metrics) - 1) / 2) * width
        mean = np.asarray([s["mean"] for s in stats])
        err = np.asarray([[m - s["min"], s["max"] - m] for s, m in zip(stats, mean, strict=True)])
        ax.bar(pos, mean, width, color=colour, label=name, yerr=err.T, capsize=3)
        for p, seeds in zip(pos, (points or {}).get(name, []), strict=False):
            ax.scatter(np.full(len(seeds), p), seeds, s=9, color="k", zorder=3)
    if chance is not None:
        ax.axhline(chance, color="0.4", ls="--", lw=1, label="chance")
    ax.set_xticks(x, groups, rotation=15, ha="right")
    if ylim is not None:
        ax.set_ylim(*ylim)
    if percent:
        _percent(ax)
    ax.set(ylabel=ylabel, title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_pairs(rows: Sequence[dict[str, Any]], title: str, chance: float = 0.5) -> Figure:
    """Test recovery (a) of every merged pair, sorted, coloured by mapping, min-max whiskers."""
    set_style()
    mappings = list(dict.fromkeys(r["mapping"] for r in rows))
    colours = dict(zip(mappings, coarse_palette(len(mappings)), strict=True))
    fig, ax = plt.subplots(figsize=(6.8, 0.28 * len(rows) + 1.4))
    y = np.arange(len(rows))
    for i, r in enumerate(rows):
        ax.barh(i, r["mean"], color=colours[r["mapping"]],
                xerr=[[r["mean"] - r["min"]], [r["max"] - r["mean"]]], capsize=2)
    ax.axvline(chance, color="0.4", ls="--", lw=1)
    ax.set_yticks(y, [f"{r['pair']} ({r['mapping']}, n={r['n']})" for r in rows], fontsize=7)
    ax.set_xlim(0.4, 1.0)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(xmax=1.0, decimals=0))
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in mappings]
    ax.legend(handles, mappings, fontsize=7, loc="lower right")
    ax.set(xlabel="fine recovery inside the pair, test (true super-class)", title=title)
    ax.title.set_fontsize(9)
    return fig


def plot_vs_separation(
    rows: Sequence[dict[str, Any]], keys: dict[str, str], title: str, ylabel: str,
    percent: bool = True, log: bool = False,
) -> Figure:
    """Mean over seeds against the fine clusters' separation, error bars min-max."""
    set_style()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    sep = np.asarray([r["separation"] for r in rows])
    for (key, name), colour in zip(keys.items(), coarse_palette(len(keys)), strict=True):
        mean = np.asarray([r[key]["mean"] for r in rows])
        err = np.asarray([[m - r[key]["min"], r[key]["max"] - m]
                          for r, m in zip(rows, mean, strict=True)])
        ax.errorbar(sep, mean, yerr=err.T, marker="o", ms=4, capsize=3, color=colour, label=name)
    if log:
        ax.set_yscale("log")
    if percent:
        _percent(ax)
    ax.set(xlabel="distance between the fine clusters of a class (noise std units)",
           ylabel=ylabel, title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    return fig


def dynamics_figures(summary: dict[str, Any], prefix: str) -> dict[str, Figure]:
    """One figure per quantity of a dynamics summary (summaries.dynamics_summary)."""
    s, title = summary["series"], summary["setting"]

    def pick(*paths: str) -> dict[str, dict[str, Any]]:
        """The named series, keyed by their labels."""
        return {s[p]["label"]: s[p] for p in paths}

    args = {"tpt": summary["tpt_epoch"]}
    epochs = summary["epochs"]
    return {
        f"{prefix}_recovery": plot_series_band(
            epochs, pick("coarse_train_acc", "recovery.train_cluster_acc",
                         "recovery.test_acc_true_coarse", "recovery.test_acc_pred_coarse"),
            f"fine-label recovery over training\n{title}", "accuracy", percent=True, **args),
        f"{prefix}_nc1_coarse": plot_series_band(
            epochs, pick("nc.coarse.nc1"), f"NC1 against the coarse labels\n{title}",
            "NC1 = tr(Σ_W Σ_B⁺)/K", log=True, **args),
        f"{prefix}_nc1_fine": plot_series_band(
            epochs, pick("nc.fine.nc1"), f"NC1 against the fine labels\n{title}",
            "NC1 = tr(Σ_W Σ_B⁺)/K", log=True, **args),
        f"{prefix}_fine_separation": plot_series_band(
            epochs, pick("nc.fine_structure.fine_variance_fraction_mean"),
            f"within-super-class fine separation (mean over super-classes)\n{title}",
            "share of variance", percent=True, **args),
        f"{prefix}_nc1_within": plot_series_band(
            epochs, pick("nc.fine_structure.nc1_within_superclass_mean"),
            f"NC1 of the fine classes inside a super-class (mean)\n{title}",
            "NC1 = tr(Σ_W Σ_B⁺)/K, K fine classes", log=True, **args),
    }


def grid_figures(grid: dict[str, Any]) -> dict[str, Figure]:
    """Heat-maps over the lr x weight-decay grid: recovery, NC1, train fit, terminal phase."""
    wrapped = "\n".join(textwrap.wrap(grid["setting"], 60))

    def heat(values: list[list[float]], fmt: str, what: str) -> Figure:
        """One annotated heat-map."""
        fig = plot_grid_heatmap(values, grid["lrs"], grid["weight_decays"], f"{what}\n{wrapped}",
                                fmt=fmt, xlabel="weight decay", ylabel="initial learning rate")
        fig.axes[0].title.set_fontsize(8)
        return fig

    on = grid.get("evaluated_on", "test").split(" (")[0]
    mean = grid["mean"]
    figures = {
        "grid_recovery": heat(mean["recovery.test_acc_true_coarse"], ".1%",
                              f"fine recovery, {on}, true super-class (a)"),
        "grid_recovery_pred": heat(mean["recovery.test_acc_pred_coarse"], ".1%",
                                   f"fine recovery, {on}, predicted super-class (b)"),
        "grid_nc1": heat(mean["nc.coarse.nc1"], ".3g", "NC1 against the coarse labels"),
        "grid_nc1_fine": heat(mean["nc.fine.nc1"], ".3g", "NC1 against the fine labels"),
        "grid_coarse_train_acc": heat(mean["coarse.train_acc"], ".1%",
                                      "clean coarse train accuracy")}
    if "reached" in grid:
        figures["grid_terminal_phase"] = heat(grid["reached"], ".0%",
                                              "share of seeds in the terminal phase")
    return figures


def hierarchy_figures(summary: dict[str, dict[str, Any]], pairs: list[dict[str, Any]],
                      results: list[dict[str, Any]]) -> dict[str, Figure]:
    """Per mapping: recovery and fine separation with seeds; per merged pair: its recovery."""
    groups = list(summary)
    runs = group_by(results, "mapping")
    seeds = max(len(v) for v in runs.values())
    title = run_setting(results[0], seeds)

    run = run_classes(results[0])

    def bars(paths: tuple[str, ...], what: str, ylabel: str, chance: float | None,
             ylim: tuple[float, float] | None = None) -> Figure:
        """Grouped bars of some summary paths."""
        metrics = {label(p, run): [summary[g][p] for g in groups] for p in paths}
        dots = {label(p, run): [[value(r, p) for r in runs[g]] for g in groups] for p in paths}
        return plot_grouped_bars(groups, metrics, f"{what}\n{title}", ylabel, dots, chance=chance,
                                 ylim=ylim)

    return {
        "hierarchies_recovery": bars(
            ("recovery.train_cluster_acc", "recovery.test_acc_true_coarse",
             "controls.random_init.test_acc_true_coarse"),
            "fine-label recovery by coarse mapping", "accuracy", 0.5, (0.4, 1.0)),
        "hierarchies_separation": bars(
            ("nc.fine_structure.fine_variance_fraction_mean",),
            "within-super-class fine separation by coarse mapping", "share of variance", None),
        "hierarchies_coarse_acc": bars(
            ("coarse.train_acc", "coarse.test_acc"), "coarse accuracy by mapping", "accuracy",
            None),
        "hierarchies_pairs": plot_pairs(pairs, f"which merged pairs keep their fine structure "
                                               f"(n seeds each)\n{title}"),
    }


def split_figures(summary: dict[str, dict[str, Any]], setting: str) -> dict[str, Figure]:
    """The halves of a class against two real classes merged, spread over seeds."""
    groups = list(summary)
    names = [summary[g]["label"] for g in groups]

    def bars(keys: dict[str, str], what: str, ylabel: str, chance: float | None,
             ylim: tuple[float, float] | None) -> Figure:
        """Grouped bars over the compared models."""
        metrics = {label: [summary[g][k] for g in groups] for k, label in keys.items()}
        return plot_grouped_bars(names, metrics, f"{what}\n{setting}", ylabel, chance=chance,
                                 ylim=ylim)

    return {
        "split_recovery": bars({"train_cluster_acc": "k-means, train",
                                "test_acc_true_class": "k-means, test (true class)"},
                               "recovering the two halves of a class vs two merged classes",
                               "accuracy", 0.5, (0.4, 1.0)),
        "split_separation": bars({"fine_variance_fraction": "between-halves share of variance"},
                                 "how far the two parts of a class lie apart", "share", None,
                                 None),
    }


def _mark_terminal_phase(fig: Figure, sweep: list[dict[str, Any]], curves_at: list[float]) -> None:
    """Dotted lines at the epochs where the drawn runs enter the terminal phase."""
    drawn = {float(s) for s in curves_at}
    onsets = sorted({r["terminal_phase"]["onset_epoch"] for r in sweep
                     if r["separation"] in drawn and r["terminal_phase"]["reached"]})
    ax = fig.axes[0]
    for i, t in enumerate(onsets):
        ax.axvline(t, color="0.3", ls=":", lw=1,
                   label="terminal phase begins (a seed)" if i == 0 else None)
    if not onsets:
        ax.text(0.99, 0.02, "no drawn run reaches the terminal phase", transform=ax.transAxes,
                ha="right", va="bottom", color="0.4", fontsize=8)
    ax.legend(fontsize=8)


def synthetic_figures(rows: list[dict[str, Any]], sweep: list[dict[str, Any]],
                      curves_at: list[float], title: str) -> dict[str, Figure]:
    """Recovery and NC1 against separation, and recovery / NC1 over training."""
    def over(key: str, what: str, ylabel: str, percent: bool, log: bool) -> Figure:
        """One measure over training, one line per separation, terminal-phase onsets marked."""
        epochs, series = history_series(sweep, key, curves_at)
        fig = plot_series_band(epochs, series, f"{what}\n{title}", ylabel, percent=percent,
                               log=log)
        _mark_terminal_phase(fig, sweep, curves_at)
        return fig

    return {
        "synthetic_recovery": plot_vs_separation(
            rows, {"final_recovery_test": "hidden layer, trained",
                   "init_recovery_test": "hidden layer, random init",
                   "input_recovery": "raw inputs"},
            f"fine-cluster recovery (test, true class)\n{title}", "accuracy"),
        "synthetic_nc1": plot_vs_separation(
            rows, {"init_nc1_coarse": "NC1 coarse, random init",
                   "final_nc1_coarse": "NC1 coarse, trained",
                   "input_nc1_coarse": "NC1 coarse, raw inputs",
                   "final_nc1_fine": "NC1 fine, trained", "init_nc1_fine": "NC1 fine, random init"},
            f"NC1 of the hidden layer and of the raw inputs\n{title}", "NC1", percent=False,
            log=True),
        "synthetic_recovery_over_training": over(
            "recovery_test", "fine-cluster recovery over training", "accuracy", True, False),
        "synthetic_nc1_over_training": over(
            "nc1_coarse", "NC1 (coarse) over training", "NC1", False, True),
        "synthetic_accuracy_over_training": over(
            "coarse_train_acc", "clean coarse train accuracy over training", "accuracy", True,
            False),
        "synthetic_separation_over_training": over(
            "fine_variance_fraction", "between-fine share of class variance over training",
            "share", True, False),
    }


def plot_vs_nc1(cells: Sequence[dict[str, Any]], runs: Sequence[Sequence[dict[str, Any]]],
                keys: dict[str, str], control: float, title: str) -> Figure:
    """Each measure at the end against coarse NC1: seeds as dots, cell means with sd bars."""
    set_style()
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    markers = "osD^vP*X"
    for (key, name), colour in zip(keys.items(), coarse_palette(len(keys)), strict=True):
        for i, (cell, cell_runs) in enumerate(zip(cells, runs, strict=True)):
            x = [value(r, "nc.coarse.nc1") for r in cell_runs]
            ax.scatter(x, [value(r, key) for r in cell_runs], s=10, color=colour, alpha=0.5,
                       marker=markers[i % len(markers)])
            nc1, y = cell["end"]["nc.coarse.nc1"], cell["end"][key]
            ax.errorbar(nc1["mean"], y["mean"], xerr=nc1["sd"], yerr=y["sd"], color=colour,
                        marker=markers[i % len(markers)], ms=7, capsize=3, ls="none",
                        label=f"{name}, wd {cell['weight_decay']:g}")
    ax.axhline(control, color="0.4", ls="--", lw=1, label="(a) at random init (mean)")
    ax.set_xscale("log")
    # NC1 of the cells spans about a decade: label the minor ticks too, plainly and tilted.
    for axis_format in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis_format(matplotlib.ticker.FormatStrFormatter("%.3g"))
    ax.tick_params(axis="x", which="both", labelrotation=45, labelsize=7)
    _percent(ax)
    ax.set(xlabel="coarse NC1 at the end (log)", ylabel="at the end of training", title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def strength_figures(summary: dict[str, Any],
                     runs: list[list[dict[str, Any]]]) -> dict[str, Figure]:
    """Per weight-decay cell (nbutils.strength): the measures against coarse NC1 at the end, and
    their change from each seed's terminal-phase onset to the end (seeds holding the phase)."""
    cells, title = summary["cells"], "\n".join(textwrap.wrap(summary["setting"], 60))
    keys = {k: summary["labels"][k] for k in summary["labels"]
            if k.startswith(("recovery.", "nc.fine_structure."))}
    control = float(np.nanmean([c["end"][k]["mean"] for c in cells for k in c["end"]
                                if k.startswith("controls.")]))
    groups = [f"wd {c['weight_decay']:g} ({c['epochs']} ep.)"
              + ("" if c["holds_phase"] else ", phase not held") for c in cells]
    changes = {name: [c["onset_to_end"]["measures"][k]["change_spread"] for c in cells]
               for k, name in keys.items()}
    dots = {name: [c["onset_to_end"]["measures"][k]["change"] for c in cells]
            for k, name in keys.items()}
    return {
        "strength_vs_nc1": plot_vs_nc1(
            cells, runs, keys, control, f"fine structure against collapse, per weight decay\n"
                                        f"{title}"),
        # The legend takes the right of this figure: a narrower title stays inside it.
        "strength_changes": plot_grouped_bars(
            groups, changes, f"change from terminal-phase onset to end\n(seeds holding it "
                             f">= {summary['hold']:.0%} of training)\n"
                             + "\n".join(textwrap.wrap(summary["setting"], 40)),
            "change (percentage points)", dots),
    }
