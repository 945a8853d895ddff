"""The figures of a run (docs/protocol.md, section 6), each from saved artifacts.

`render_run` draws all of them from the JSON logs and `compact.npz` alone, without
checkpoints or features, so a run trained and analysed on a GPU box is drawn on a laptop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from nbutils.analysis import umap_views_from_compact
from nbutils.config import RunConfig
from nbutils.data import class_names
from nbutils.metrics import classes, run_classes
from nbutils.plots import charts
from nbutils.results import table_rows, table_title
from nbutils.runs import compact_path, figure_path, load_json, load_npz, model_dir

MODEL_LABELS = {"coarse": "coarse (super-class labels)", "baseline": "baseline (fine labels)"}


def run_label(cfg: RunConfig) -> str:
    """Profile, model, epochs and seeds of a run, for figure titles."""
    return (f"profile {cfg.profile}: {cfg.dataset} {cfg.mapping}, ResNet-18 w={cfg.width}, "
            f"{cfg.epochs} epochs, 1 seed ({cfg.seed})")


def titled(fig: Figure, cfg: RunConfig) -> Figure:
    """Put the run's label above a figure."""
    fig.suptitle(run_label(cfg), fontsize="small")
    return fig


def training_curves(cfg: RunConfig, logs: dict[str, list[dict]]) -> Figure:
    """Loss, accuracy and learning rate of each trained model ({'coarse': log, ...})."""
    return titled(charts.plot_training_curves(
        {MODEL_LABELS[m]: log for m, log in logs.items() if log}), cfg)


def nc_figure(cfg: RunConfig, history: list[dict]) -> Figure:
    """NC1-NC4 and the fine-structure indicators over epochs of one model."""
    return titled(charts.plot_nc_over_epochs(history, classes(cfg.mapping, cfg.dataset)), cfg)


def recovery_figure(cfg: RunConfig, res: dict[str, Any]) -> Figure:
    """Recovery over epochs with the controls and the fine-label baseline as reference lines."""
    ctrl = {"random init": res["controls"]["random_init"]["test_acc_true_coarse"],
            "raw pixels": res["controls"]["raw_pixels"]["test_acc_true_coarse"]}
    base = res["baseline"]["test_acc"] if res["baseline"] else None
    return titled(charts.plot_recovery_over_epochs(res["history"], ctrl, base,
                                                   run_classes(res)), cfg)


def variants_figure(cfg: RunConfig, res: dict[str, Any]) -> Figure:
    """The test variants (a)-(d) beside the baseline, a control and the paper, with intervals."""
    return titled(charts.plot_recovery_variants(res), cfg)


def results_figure(res: dict[str, Any]) -> Figure:
    """The results table as a figure (markdown emphasis dropped: a figure has no markdown)."""
    rows = [(label.replace("**", ""), value) for label, value in table_rows(res)]
    return charts.plot_results_table(rows, title=table_title(res))


def confusion_figure(cfg: RunConfig, test_fine: np.ndarray, predicted: np.ndarray,
                     fine_to_coarse: np.ndarray) -> Figure:
    """Confusion matrix of the recovered fine test labels (variant b)."""
    names = class_names(cfg.dataset, len(fine_to_coarse))
    return titled(charts.plot_confusion(
        test_fine, predicted, names,
        title=f"recovered fine labels, test (predicted super-class), epoch {cfg.epochs}"), cfg)


def umap_figures(cfg: RunConfig, views: dict[str, Any]) -> tuple[Figure, Figure]:
    """UMAP of all super-classes, then one panel per super-class coloured by fine label."""
    every = charts.plot_umap(views["all"], views["coarse"], views["coarse_names"],
                          title=f"all super-classes, epoch {cfg.epochs}")
    per = charts.plot_umap_grid(views["per_superclass"], views["fine"], views["fine_names"],
                             views["titles"])
    return titled(every, cfg), titled(per, cfg)


def render_run(cfg: RunConfig, umap: bool = True) -> list[Path]:
    """Draw every figure of a finished run from its JSON artifacts and compact.npz."""
    models = cfg.models
    res = load_json(Path(cfg.run_dir) / "results.json")
    compact = load_npz(compact_path(cfg))
    figures = {
        "training_curves": training_curves(
            cfg, {m: load_json(model_dir(cfg, m) / "log.json") for m in models}),
        "nc_over_epochs": nc_figure(cfg, load_json(model_dir(cfg, "coarse") / "collapse.json")),
        "results_table": results_figure(res),
        "recovery_over_epochs": recovery_figure(cfg, res),
        "recovery_variants": variants_figure(cfg, res),
        "confusion_matrix": confusion_figure(cfg, compact["test_fine"],
                                             compact["test_pred_pred_coarse"],
                                             compact["fine_to_coarse"]),
    }
    if "baseline" in models:
        figures["nc_over_epochs_baseline"] = nc_figure(
            cfg, load_json(model_dir(cfg, "baseline") / "collapse.json"))
    if umap:
        figures["umap_all"], figures["umap_per_superclass"] = umap_figures(
            cfg, umap_views_from_compact(cfg))
    paths = []
    for name, fig in figures.items():
        charts.save_fig(fig, cfg, name)
        paths.append(figure_path(cfg, name))
        plt.close(fig)
    return paths
