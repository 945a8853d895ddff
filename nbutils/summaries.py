"""Summaries over seeds of the experiments' runs (notebooks 06-08): dynamics, grid, hierarchies.

Everything here reads the results.json of finished runs (see sweeps.py); the 20-label split of
notebook 09 is nbutils.split, the figures nbutils.plots.experiments, the tables
nbutils.plots.tables and the records the notebooks save nbutils.records.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from nbutils import phase
from nbutils.data import CIFAR10_CLASSES, coarse_mapping, mapping_table
from nbutils.metrics import label, labels, run_classes, value
from nbutils.runs import load_json
from nbutils.stats import spread, t_interval

# Metric keys (nbutils.metrics) the figures and summaries follow.
RECOVERY_KEYS = ("recovery.train_cluster_acc", "recovery.test_acc_true_coarse",
                 "recovery.test_acc_pred_coarse")
NC1_KEYS = ("nc.coarse.nc1", "nc.fine.nc1")
SEPARATION_KEYS = ("nc.fine_structure.fine_variance_fraction_mean",
                   "nc.fine_structure.nc1_within_superclass_mean")
SUMMARY_KEYS = (
    "coarse.train_acc", "coarse.test_acc", *RECOVERY_KEYS, "recovery.nmi", *NC1_KEYS,
    *SEPARATION_KEYS, "controls.random_init.test_acc_true_coarse", "baseline.test_acc",
    "ratio_to_baseline",
)


def config_of(res: dict[str, Any], key: str) -> Any:
    """A configuration value of a run's results.json."""
    return res["config"][key]


def run_setting(res: dict[str, Any], seeds: int) -> str:
    """The setting a figure states: profile, width, data, budget and number of seeds."""
    cfg = res["config"]
    per = f"{cfg['train_per_class']}/class" if cfg["train_per_class"] else "full train set"
    budget = (f"{cfg['steps']:,} steps ({cfg['epochs']} epochs)" if cfg.get("steps")
              else f"{cfg['epochs']} epochs")
    return (f"profile {cfg['profile']}: ResNet-18 w={cfg['width']}, {per}, {budget}, "
            f"{seeds} seed{'s' if seeds != 1 else ''}")


def group_by(results: list[dict[str, Any]], key: str) -> dict[Any, list[dict[str, Any]]]:
    """Results grouped by one configuration key, groups in first-seen order."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for res in results:
        groups.setdefault(str(config_of(res, key)), []).append(res)
    return groups


def summarise(results: list[dict[str, Any]], key: str,
              paths: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, dict[str, Any]]:
    """Per value of config `key`: the seeds and the spread of every path over them."""
    return {g: {"seeds": [config_of(r, "seed") for r in rs],
                **{p: spread([value(r, p) for r in rs]) for p in paths}}
            for g, rs in group_by(results, key).items()}


# --------------------------------------------------------------------------- dynamics


def history_matrix(results: list[dict[str, Any]], path: str) -> tuple[np.ndarray, np.ndarray]:
    """(checkpoint epochs, seeds x epochs values) of `path` over the runs' histories."""
    epochs = [tuple(h["epoch"] for h in r["history"]) for r in results]
    if not results or len(set(epochs)) != 1:
        raise ValueError("results: need at least one run, all with the same checkpoint epochs")
    return (np.asarray(epochs[0]),
            np.asarray([[value(h, path) for h in r["history"]] for r in results]))


def dynamics_summary(results: list[dict[str, Any]], threshold: float = phase.THRESHOLD,
                     hold: float = phase.HOLD) -> dict[str, Any]:
    """Every dynamics series (mean, sd, per seed) and each seed's terminal phase (nbutils.phase).

    `tpt_epoch` is a seed's terminal-phase onset when it reached the phase (held for at least
    `hold` of training), else None.
    """
    phases = [phase.terminal_phase_of(r, threshold, hold) for r in results]
    out: dict[str, Any] = {"setting": run_setting(results[0], len(results)),
                           "seeds": [config_of(r, "seed") for r in results],
                           "threshold": threshold, "hold": hold, "phase": phases,
                           "tpt_epoch": [p["onset_epoch"] if p["reached"] else None
                                         for p in phases],
                           "series": {}}
    run = run_classes(results[0])
    for path in ("coarse_train_acc", *RECOVERY_KEYS, *NC1_KEYS, *SEPARATION_KEYS):
        epochs, m = history_matrix(results, path)
        per_epoch = [spread(column.tolist()) for column in m.T]
        out["epochs"] = epochs.tolist()
        out["series"][path] = {"label": label(path, run), "mean": [e["mean"] for e in per_epoch],
                               "sd": [e["sd"] for e in per_epoch], "per_seed": m.tolist()}
    return out


def load_cpu_run(path: str | Path | None) -> dict[str, Any] | None:
    """A results.json (a file, or a run / figures directory holding one); None when absent."""
    if path in (None, ""):
        return None
    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    return load_json(path) if path.is_file() else None


def terminal_changes(summary: dict[str, Any]) -> dict[str, Any]:
    """terminal_change of every series but the accuracy that defines the terminal phase."""
    return {p: terminal_change(summary, p) for p in summary["series"] if p != "coarse_train_acc"}


def terminal_change(summary: dict[str, Any], path: str) -> dict[str, Any] | None:
    """Per seed, `path` at its terminal-phase epoch and at the end, and the change between."""
    epochs = summary["epochs"]
    rows = []
    for seed_values, tpt in zip(summary["series"][path]["per_seed"], summary["tpt_epoch"],
                                strict=True):
        if tpt is None:
            continue
        at = seed_values[epochs.index(tpt)]
        rows.append({"tpt_epoch": tpt, "at_tpt": at, "end": seed_values[-1],
                     "change": seed_values[-1] - at})
    return {"per_seed": rows, "change": spread([r["change"] for r in rows])} if rows else None


# What onset_to_end follows through the terminal phase of runs whose features exist only at a
# few checkpoints (feature_epochs="phase").
PHASE_CHANGE_KEYS = (*RECOVERY_KEYS, "recovery.test_cluster_acc_true_coarse", "nc.coarse.nc1",
                     *SEPARATION_KEYS)


def onset_to_end(results: list[dict[str, Any]],
                 paths: tuple[str, ...] = PHASE_CHANGE_KEYS,
                 hold: float = phase.HOLD) -> dict[str, Any]:
    """Per measure: each run's value at its own terminal-phase onset and at its end, and the
    change with its spread and Student-t 95% interval over runs (runs that do not hold the phase
    over `hold` of training are left out). Each run's onset is read as
    `phase.terminal_phase_of` reads it, and its history must hold an entry at that epoch."""
    phases = [phase.terminal_phase_of(r, hold=hold) for r in results]
    runs = [(r, p["onset_epoch"]) for r, p in zip(results, phases, strict=True) if p["reached"]]
    out: dict[str, Any] = {"seeds": [config_of(r, "seed") for r, _ in runs],
                           "onset_epoch": [onset for _, onset in runs],
                           "end_epoch": [r["history"][-1]["epoch"] for r, _ in runs],
                           "left_out_seeds": [config_of(r, "seed") for r, p
                                              in zip(results, phases, strict=True)
                                              if not p["reached"]],
                           "interval": "Student-t 95% over runs (seeds), sd ddof=1",
                           "measures": {}}
    run = run_classes(results[0])
    for path in paths:
        at, end = [], []
        for res, onset in runs:
            entry = {h["epoch"]: h for h in res["history"]}.get(onset)
            if entry is None:
                raise ValueError(f"results of seed {config_of(res, 'seed')}: no history entry "
                                 f"at its terminal-phase onset (epoch {onset}); extract its "
                                 f"features there (feature_epochs='phase' does)")
            at.append(value(entry, path))
            end.append(value(res["history"][-1], path))
        change = [b - a for a, b in zip(at, end, strict=True)]
        out["measures"][path] = {"label": label(path, run), "at_onset": at, "end": end,
                                 "change": change, "change_spread": spread(change),
                                 "change_t95": t_interval(change)}
    return out


# --------------------------------------------------------------------------- grid

GRID_KEYS = ("recovery.test_acc_true_coarse", "recovery.test_acc_pred_coarse",
             "recovery.train_cluster_acc", "coarse.train_acc", "coarse.test_acc", *NC1_KEYS,
             "nc.fine_structure.fine_variance_fraction_mean")


# What the chosen grid cell reports on test, beside its fine-label baseline.
CHOSEN_KEYS = (*SUMMARY_KEYS, "recovery.test_cluster_acc_true_coarse",
               "recovery.test_cluster_acc_pred_coarse")


def grid_summary(results: list[dict[str, Any]], lrs: list[float],
                 weight_decays: list[float]) -> dict[str, Any]:
    """lr x weight-decay matrices (mean and sample sd over seeds; NaN for a missing cell).

    Besides GRID_KEYS, `reached` holds each cell's share of seeds in the terminal phase and
    `held` each seed's share of training spent at or above the threshold up to the end. Runs
    with `val_per_class` were evaluated on a validation split carved from train, which
    `evaluated_on` says: their "test" numbers are validation numbers.
    """
    cells: dict[tuple[float, float], list[dict[str, Any]]] = {}
    for res in results:
        cells.setdefault((config_of(res, "lr"), config_of(res, "weight_decay")), []).append(res)
    seeds = max(len(v) for v in cells.values())
    val = config_of(results[0], "val_per_class")
    out: dict[str, Any] = {"setting": run_setting(results[0], seeds), "lrs": lrs,
                           "weight_decays": weight_decays,
                           "labels": labels(GRID_KEYS, run_classes(results[0])),
                           "evaluated_on": f"validation ({val}/class carved from train)"
                           if val else "test", "mean": {}, "sd": {}}
    for path in GRID_KEYS:
        stats = [[spread([value(r, path) for r in cells.get((lr, wd), [])])
                  for wd in weight_decays] for lr in lrs]
        out["mean"][path] = [[s["mean"] for s in row] for row in stats]
        out["sd"][path] = [[s["sd"] for s in row] for row in stats]
    out["reached"] = [[reached_share(cells.get((lr, wd), [])) for wd in weight_decays]
                      for lr in lrs]
    out["held"] = [[[phase.terminal_phase_of(r)["held_fraction"] for r in cells.get((lr, wd), [])]
                    for wd in weight_decays] for lr in lrs]
    return out


def reached_share(results: list[dict[str, Any]]) -> float:
    """Share of runs in the terminal phase (nbutils.phase); NaN for no runs."""
    if not results:
        return math.nan
    return sum(phase.terminal_phase_of(r)["reached"] for r in results) / len(results)


def best_cell(grid: dict[str, Any], path: str = "recovery.test_acc_pred_coarse") -> dict[str, Any]:
    """The cell with the highest mean `path`, among cells whose every seed is in the terminal phase.

    When no cell qualifies, the best of all cells is returned with `all_in_terminal_phase`
    False, so that a reader sees the choice was made before convergence.
    """
    means = np.asarray(grid["mean"][path], dtype=np.float64)
    converged = np.asarray(grid["reached"], dtype=np.float64) == 1.0
    pool = np.where(converged, means, np.nan) if converged.any() else means
    if np.isnan(pool).all():
        raise ValueError(f"grid: no cell has a value of {path!r}")
    i, j = np.unravel_index(np.nanargmax(pool), pool.shape)
    return {"lr": grid["lrs"][i], "weight_decay": grid["weight_decays"][j], "by": path,
            "on": grid["evaluated_on"], "value": float(means[i, j]),
            "all_in_terminal_phase": bool(converged[i, j]),
            "cells_in_terminal_phase": int(converged.sum())}


# --------------------------------------------------------------------------- hierarchies


def pair_names(fine_to_coarse: np.ndarray) -> list[str]:
    """'cat/dog' style names of the super-classes of a CIFAR-10 mapping."""
    return ["/".join(names) for names in mapping_table(fine_to_coarse, CIFAR10_CLASSES).values()]


def pair_table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every merged pair of every run: its mapping and test recovery (a), spread over seeds."""
    pairs: dict[tuple[str, str], list[float]] = {}
    for res in results:
        mapping = config_of(res, "mapping")
        names = pair_names(coarse_mapping(mapping))
        for name, acc in zip(names, res["recovery"]["per_superclass"], strict=True):
            pairs.setdefault((str(mapping), name), []).append(acc)
    rows = [{"mapping": m, "pair": p, **spread(v)} for (m, p), v in pairs.items()]
    return sorted(rows, key=lambda r: r["mean"])
