"""Experiments beyond the headline: summaries over seeds, dynamics, hierarchies, 20-label split.

Everything here reads the results.json of finished runs (see sweeps.py) or, for the split,
trains through train.train_model on relabelled data; plots live in nbutils.plots.experiments.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbutils import checks, phase
from nbutils.collapse import collapse_report
from nbutils.config import RunConfig, resolve
from nbutils.data import CIFAR10_CLASSES, Split, coarse_mapping, mapping_table
from nbutils.device import select_device
from nbutils.features import extract_checkpoint, load_features
from nbutils.lock import run_lock
from nbutils.recovery import recover_fine_labels
from nbutils.run_data import RunData, load_run_data
from nbutils.runs import create_run, features_path, load_json, model_dir, save_json
from nbutils.stats import spread, t_interval
from nbutils.sweeps import comparable, root_hint
from nbutils.train import train_model

# Dotted paths into results.json / history entries, with the labels figures use.
RECOVERY_KEYS = {
    "recovery.train_cluster_acc": "train clustering",
    "recovery.test_acc_true_coarse": "test, true super-class (a)",
    "recovery.test_acc_pred_coarse": "test, predicted super-class (b)",
}
NC1_KEYS = {"nc.coarse.nc1": "NC1 coarse (K=5)", "nc.fine.nc1": "NC1 fine (K=10)"}
SEPARATION_KEYS = {
    "nc.fine_structure.fine_variance_fraction_mean": "between-fine share of super-class variance",
    "nc.fine_structure.nc1_within_superclass_mean": "NC1 of the fine classes in a super-class",
}
SUMMARY_KEYS = (
    "coarse.train_acc", "coarse.test_acc", *RECOVERY_KEYS, "recovery.nmi",
    "nc.coarse.nc1", "nc.fine.nc1", *SEPARATION_KEYS,
    "controls.random_init.test_acc_true_coarse", "baseline.test_acc", "ratio_to_baseline",
)


def value(entry: dict[str, Any], path: str) -> float:
    """The number at a dotted `path` of a results or history entry (NaN when absent or None)."""
    node: Any = entry
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return math.nan
        node = node[key]
    return math.nan if node is None else float(node)


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


def sample_sd(m: np.ndarray) -> np.ndarray:
    """Column-wise sample sd (ddof=1) of a seeds x epochs matrix; NaN with a single seed."""
    return m.std(axis=0, ddof=1) if len(m) >= 2 else np.full(m.shape[1], math.nan)


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
    paths = {"coarse_train_acc": "clean coarse train accuracy", **RECOVERY_KEYS, **NC1_KEYS,
             **SEPARATION_KEYS}
    for path, label in paths.items():
        epochs, m = history_matrix(results, path)
        out["epochs"] = epochs.tolist()
        out["series"][path] = {"label": label, "mean": m.mean(axis=0).tolist(),
                               "sd": sample_sd(m).tolist(), "per_seed": m.tolist()}
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
PHASE_CHANGE_KEYS = {
    **RECOVERY_KEYS,
    "recovery.test_cluster_acc_true_coarse": "test clustered within true super-class (c)",
    "nc.coarse.nc1": "NC1 coarse", **SEPARATION_KEYS,
}


def onset_to_end(results: list[dict[str, Any]],
                 paths: dict[str, str] | None = None) -> dict[str, Any]:
    """Per measure: each run's value at its own terminal-phase onset and at its end, and the
    change with its spread and Student-t 95% interval over runs (runs out of the phase are left
    out). Each run's onset is read as `phase.terminal_phase_of` reads it, and its history must
    hold an entry at that epoch."""
    paths = PHASE_CHANGE_KEYS if paths is None else paths
    phases = [phase.terminal_phase_of(r) for r in results]
    runs = [(r, p["onset_epoch"]) for r, p in zip(results, phases, strict=True) if p["reached"]]
    out: dict[str, Any] = {"seeds": [config_of(r, "seed") for r, _ in runs],
                           "onset_epoch": [onset for _, onset in runs],
                           "end_epoch": [r["history"][-1]["epoch"] for r, _ in runs],
                           "left_out_seeds": [config_of(r, "seed") for r, p
                                              in zip(results, phases, strict=True)
                                              if not p["reached"]],
                           "interval": "Student-t 95% over runs (seeds), sd ddof=1",
                           "measures": {}}
    for path, label in paths.items():
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
        out["measures"][path] = {"label": label, "at_onset": at, "end": end, "change": change,
                                 "change_spread": spread(change),
                                 "change_t95": t_interval(change)}
    return out


def change_frame(changes: dict[str, Any], labels: dict[str, str]) -> pd.DataFrame:
    """One row per measure: seeds in the terminal phase, mean at onset and end, change ± sd."""
    rows = []
    for path, change in changes.items():
        if change:
            per = change["per_seed"]
            rows.append({"measure": labels.get(path, path), "seeds": len(per),
                         "at onset (mean)": np.mean([r["at_tpt"] for r in per]),
                         "end (mean)": np.mean([r["end"] for r in per]),
                         "change (mean)": change["change"]["mean"],
                         "change (sd, ddof=1)": change["change"]["sd"]})
    return pd.DataFrame(rows).set_index("measure") if rows else pd.DataFrame()


# --------------------------------------------------------------------------- grid

GRID_KEYS = {"recovery.test_acc_true_coarse": "fine recovery, test (a)",
             "recovery.test_acc_pred_coarse": "fine recovery, test (b)",
             "recovery.train_cluster_acc": "fine recovery, train clustering",
             "coarse.train_acc": "coarse train accuracy", "coarse.test_acc": "coarse test accuracy",
             "nc.coarse.nc1": "NC1 coarse", "nc.fine.nc1": "NC1 fine",
             "nc.fine_structure.fine_variance_fraction_mean": "between-fine variance share"}


# What the chosen grid cell reports on test, beside its 10-label baseline.
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
                           "weight_decays": weight_decays, "labels": GRID_KEYS,
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


def grid_frame(grid: dict[str, Any]) -> pd.DataFrame:
    """One row per grid cell, one column per GRID_KEYS value (means over seeds)."""
    rows = []
    for i, lr in enumerate(grid["lrs"]):
        for j, wd in enumerate(grid["weight_decays"]):
            rows.append({"lr": lr, "weight_decay": wd,
                         "seeds in terminal phase (share)": grid["reached"][i][j],
                         **{label: grid["mean"][p][i][j] for p, label in grid["labels"].items()}})
    return pd.DataFrame(rows)


def group_frame(summary: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Means (± sample sd over seeds) of a summary, one row per group."""
    rows = []
    for group, entry in summary.items():
        row = {"group": group, "seeds": entry["seeds"]}
        for key, s in entry.items():
            if isinstance(s, dict) and "mean" in s:
                row[key] = f"{s['mean']:.4f} ± {s['sd']:.4f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("group")


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


# --------------------------------------------------------------------------- 20-label split

# Split model -> the pipeline model that trains it: the pipeline's "baseline" learns the run's
# fine labels, here the 20 halves; its "coarse" model learns their classes, the 10 real ones.
SPLIT_MODELS = {"20-label": "baseline", "10-label": "coarse"}
SPLIT_LABELS = {"20-label": "20-label model (halves are labels)",
                "10-label": "10-label model (halves unlabelled)"}


def split_halves(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded random half (0 or 1) for every sample, balanced within each class."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    half = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        half[idx[len(idx) // 2:]] = 1
    return half


def split_run_data(cfg: RunConfig) -> RunData:
    """The run's data with every class split at random into halves 2c and 2c+1 (20 labels).

    The fine -> super-class map sends each half back to its class, so the pipeline's 'baseline'
    model is the 20-label model and its 'coarse' model the 10-label one (SPLIT_MODELS).
    """
    data = load_run_data(cfg)

    def relabel(split: Split, seed: int) -> Split:
        """Labels 2 * class + random half."""
        return Split(split.images, 2 * split.labels + split_halves(split.labels, seed))

    # Test halves are drawn with another seed: they are a fresh random split, as on train.
    return RunData(relabel(data.train, cfg.seed), relabel(data.test, cfg.seed + 1),
                   np.arange(20, dtype=np.int64) // 2)


def half_separation(cfg: RunConfig, split_model: str, epoch: int) -> dict[str, Any]:
    """How far the halves of each class separate in one checkpoint's features.

    `own_train_acc` is the clean (eval-mode) train accuracy on the labels the model was trained
    on, 20 halves or 10 classes, which says whether and when it fits them. For the 20-label
    model, `head_half_acc_*` is the head's half decision where it named the right class: on
    train it measures memorisation of the halves; on test the halves are a fresh random split,
    so it is at chance (0.5) by construction.
    """
    f = load_features(cfg, SPLIT_MODELS[split_model], epoch)
    f2c = f["fine_to_coarse"]
    trained_on = "fine" if split_model == "20-label" else "coarse"
    nc = collapse_report(f["train_features"], f["train_fine"], f2c, trained_on,
                         head_weight=f["head_weight"], head_bias=f["head_bias"])
    rec = recover_fine_labels(f["train_features"], f["train_fine"], f["test_features"],
                              f["test_fine"], f2c, n_init=cfg.n_init, seed=cfg.seed,
                              feature_norm=cfg.feature_norm, probe=False).metrics
    classes = {s: f2c[f[f"{s}_fine"]] for s in ("train", "test")}
    pred_class = {s: f[f"{s}_pred"] // 2 if trained_on == "fine" else f[f"{s}_pred"]
                  for s in ("train", "test")}
    own = f["train_fine"] if trained_on == "fine" else classes["train"]
    out = {"epoch": epoch, "train_cluster_acc": rec["train_cluster_acc"],
           "test_acc_true_class": rec["test_acc_true_coarse"],
           "fine_variance_fraction": nc["fine_structure"]["fine_variance_fraction_mean"],
           "nc1_within_class": nc["fine_structure"]["nc1_within_superclass_mean"],
           "own_train_acc": float((f["train_pred"] == own).mean()),
           "class_train_acc": float((pred_class["train"] == classes["train"]).mean()),
           "class_test_acc": float((pred_class["test"] == classes["test"]).mean())}
    if trained_on == "fine":
        for split in ("train", "test"):
            right = pred_class[split] == classes[split]
            hit = f[f"{split}_pred"][right] == f[f"{split}_fine"][right]
            out[f"head_half_acc_{split}"] = float(hit.mean()) if right.any() else math.nan
    return out


def split_configs(profile: str, root: str | Path, seeds: list[int],
                  **common: Any) -> list[RunConfig]:
    """Validated configs of the split runs, one per seed, both models trained.

    `train_baseline` in `common` is ignored: a split run always trains both of its models.
    """
    if not isinstance(seeds, list) or not seeds:
        raise ValueError(f"seeds: must be a non-empty list, got {seeds!r}")
    given = {k: v for k, v in common.items() if v is not None and k != "train_baseline"}
    if "mapping" in given:
        raise ValueError("overrides: mapping cannot be set, the split run defines its labels")
    return [resolve(profile, run_dir=str(Path(root) / f"seed={s}"), seed=s, train_baseline=True,
                    **given) for s in seeds]


def run_split(cfg: RunConfig, models: tuple[str, ...] = tuple(SPLIT_MODELS),
              progress: bool = True) -> dict[str, Any]:
    """Train the split run's models (resuming), extract features, measure the halves.

    Each model records its history over checkpoints and its terminal phase (nbutils.phase) on
    the labels it was trained on.
    """
    checks.flag("progress", progress)
    unknown = sorted(set(models) - set(SPLIT_MODELS))
    if unknown or not models:
        raise ValueError(f"models: unknown or empty {unknown or models}; allowed: "
                         f"{', '.join(SPLIT_MODELS)}")
    path = Path(cfg.run_dir) / "split_results.json"
    if path.is_file():
        done = load_json(path)
        if (comparable(done["config"]) == comparable(cfg.to_dict())
                and all(m in done for m in models)):
            return done
    data = split_run_data(cfg)
    device = select_device(cfg.device)
    out: dict[str, Any] = {"config": cfg.to_dict(), "labels": "20 random halves (2 per class)"}
    # A second process on the same split run waits for no one: it fails fast, naming the holder.
    with run_lock(cfg.run_dir):
        create_run(cfg, hint=root_hint(cfg))
        for model in models:
            trained = SPLIT_MODELS[model]
            log = train_model(cfg, trained, data, progress=progress)
            for epoch in cfg.checkpoint_epochs:
                if not features_path(cfg, trained, epoch).is_file():
                    extract_checkpoint(cfg, trained, epoch, data, device, progress)
            history = [half_separation(cfg, model, e) for e in cfg.checkpoint_epochs]
            meta = load_json(model_dir(cfg, trained) / "train_meta.json")
            out[model] = {"amp": meta["amp"], "environment": meta.get("environment"),
                          "train_acc_augmented": log[-1]["train_acc"],
                          "test_acc": log[-1]["test_acc"],
                          "phase": phase.terminal_phase([h["epoch"] for h in history],
                                                        [h["own_train_acc"] for h in history]),
                          "history": history}
        save_json(path, out)
    return out


SPLIT_KEYS = ("train_cluster_acc", "test_acc_true_class", "fine_variance_fraction",
              "nc1_within_class")
MERGED_KEYS = {"train_cluster_acc": "recovery.train_cluster_acc",
               "test_acc_true_class": "recovery.test_acc_true_coarse",
               "fine_variance_fraction": "nc.fine_structure.fine_variance_fraction_mean",
               "nc1_within_class": "nc.fine_structure.nc1_within_superclass_mean"}


def split_summary(split_runs: list[dict[str, Any]],
                  merged_runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Spread over seeds of the halves' separation (each model) beside real merged pairs."""
    out = {}
    for model, label in SPLIT_LABELS.items():
        runs = [r for r in split_runs if model in r]
        if runs:
            finals = [r[model]["history"][-1] for r in runs]
            keys = (*SPLIT_KEYS, "own_train_acc", "class_train_acc", "class_test_acc",
                    "head_half_acc_train", "head_half_acc_test")
            out[model] = {"label": label, "seeds": [r["config"]["seed"] for r in runs],
                          "reached_terminal_phase": [r[model]["phase"]["reached"] for r in runs],
                          **{k: spread([f.get(k, math.nan) for f in finals]) for k in keys}}
    if merged_runs:
        out["merged"] = {
            "label": f"5-label {config_of(merged_runs[0], 'mapping')} model (real pairs merged)",
            "seeds": [config_of(r, "seed") for r in merged_runs],
            "reached_terminal_phase": [phase.terminal_phase_of(r)["reached"]
                                       for r in merged_runs],
            **{k: spread([value(r, p) for r in merged_runs]) for k, p in MERGED_KEYS.items()}}
    return out
