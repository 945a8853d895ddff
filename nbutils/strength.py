"""Collapse strength (notebook 12): does the fine structure survive a deeper collapse?

Cells are weight decays at one learning rate on profile `full` (all 50,000 train images, no
augmentation, step schedule), several seeds each. Stronger weight decay fits more slowly, so
each weight decay has its own epoch budget and may have its own lr drops; the checkpoints of
every budget follow profile `full`'s rule (`config.phase_checkpoints`). A cell is read in the
terminal phase only when every seed holds it over at least HOLD of training; one that does not
is reported as such.

Per run: recovery (a), train clustering, (c), the between-fine share and coarse NC1 at the end,
and their change from the run's terminal-phase onset to the end (`summaries.onset_to_end`).
Per cell: mean ± sd over seeds (`stats.spread`). Between cells: differences paired by seed with
Student-t intervals over seeds. Runs of one seed share their data order and initialisation
across cells, so they are not independent: a cell difference is read within seeds (paired),
never as two independent samples. Where a run kept its phase features, `cluster_axis` says what
the 2-means split of its test features follows.

The pair counterfactual (`pair_counterfactual`): each merged pair's test recovery in a cell's
coarse model against the same two classes in its seed's 10-label baseline (`nbutils.pairs`,
source `baseline`). The cells train coarse models only and share one baseline per seed, as the
hierarchies do: the published `full` seeds' (`figures/full/**/logs/pairs.json`), trained with the
profile's own recipe.
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Any

from nbutils import checks, cluster_axis, phase, sweeps
from nbutils.config import RunConfig
from nbutils.data import coarse_mapping
from nbutils.metrics import labels, run_classes, value
from nbutils.pairs import pairs_file
from nbutils.runs import ArtifactError, load_json, phase_features_path
from nbutils.stats import spread, t_interval
from nbutils.summaries import config_of, onset_to_end, pair_names

# Every seed holds the terminal phase over at least this share of training (twice the
# protocol's minimum), so that what changes inside the phase can be measured.
HOLD = 0.5
# What the cells are compared on, at the end of training and from onset to end.
KEYS = ("recovery.test_acc_true_coarse", "recovery.train_cluster_acc",
        "recovery.test_cluster_acc_true_coarse",
        "nc.fine_structure.fine_variance_fraction_mean", "nc.coarse.nc1")
# The random-init level (a) is read against.
CONTROL = "controls.random_init.test_acc_true_coarse"
# Candidate splits (nbutils.cluster_axis) whose agreement with the 2-means split is summarised.
AXIS_KEYS = ("fine_label.agreement", "correct_vs_wrong.agreement",
             "norm_above_median.agreement", "confusion.agreement",
             "variance_share.fine_axis", "variance_share.top_axis",
             "train_variance_share.fine_axis", "train_variance_share.top_axis")
# What a cell's run and the baseline it is set against must share: the same images, pairs and
# recovery protocol (the training recipe is the cells' variable; the baseline keeps the profile's).
BASELINE_MATCH = ("dataset", "mapping", "width", "train_per_class", "test_per_class",
                  "val_per_class", "feature_norm", "n_init")
PAIRING = ("paired by seed: a seed's runs share data order and initialisation across cells, so "
           "they are not independent; each difference is taken within a seed and its Student-t "
           "95% interval (sd ddof=1, n - 1 dof) is over seeds")


def epochs_for(weight_decay: float, epochs_by_weight_decay: dict[Any, int]) -> int:
    """The epoch budget of one weight decay (keys may be numbers or their strings)."""
    budgets = {float(k): v for k, v in epochs_by_weight_decay.items()}
    if float(weight_decay) not in budgets:
        raise ValueError(f"epochs_by_weight_decay: no budget for weight decay {weight_decay!r}; "
                         f"given {sorted(budgets)}")
    return checks.positive_int(f"epochs_by_weight_decay[{weight_decay!r}]",
                               budgets[float(weight_decay)])


def milestones_for(weight_decay: float,
                   milestones_by_weight_decay: dict[Any, list[float]]) -> list[float] | None:
    """The lr drops of one weight decay as fractions of its training; None: the profile's."""
    named = {float(k): v for k, v in (milestones_by_weight_decay or {}).items()}
    return named.get(float(weight_decay))


def points(weight_decays: list[float], seeds: list[int], epochs_by_weight_decay: dict[Any, int],
           lr: float = 0.1,
           milestones_by_weight_decay: dict[Any, list[float]] | None = None,
           ) -> list[dict[str, Any]]:
    """Sweep points, seed by seed (a cut-short sweep has seen every cell), each with its budget."""
    checks.nonempty_list("weight_decays", weight_decays)
    checks.nonempty_list("seeds", seeds)
    cells = {float(w) for w in weight_decays}
    unknown = {float(k) for k in milestones_by_weight_decay or {}} - cells
    if unknown:
        raise ValueError(f"milestones_by_weight_decay: weight decays {sorted(unknown)} are not "
                         f"cells; the cells are {list(weight_decays)}")
    out = []
    for s in seeds:
        for wd in weight_decays:
            point = {"lr": lr, "weight_decay": wd, "seed": s,
                     "epochs": epochs_for(wd, epochs_by_weight_decay)}
            drops = milestones_for(wd, milestones_by_weight_decay or {})
            if drops is not None:
                point["step_milestones"] = list(drops)
            out.append(point)
    return out


def seed_folders(folder: str | Path) -> list[Path]:
    """A published profile's folder and its `seeds/*` folders, one per published seed."""
    return [Path(folder), *sorted(Path(folder).glob("seeds/*"))]


def published_runs(folder: str | Path) -> list[dict[str, Any]]:
    """results.json of a published profile's seeds (`logs/`, `seeds/*/logs/`), each config's
    run_dir set to the folder now holding its records and phase features."""
    logs = [d / "logs" for d in seed_folders(folder) if (d / "logs" / "results.json").is_file()]
    if not logs:
        raise ArtifactError(f"published: no results.json under {folder}/logs or "
                            f"{folder}/seeds/*/logs")
    return [{**res, "config": {**res["config"], "run_dir": str(d)}}
            for d, res in ((d, load_json(d / "results.json")) for d in logs)]


def _differs(published: dict[str, Any], point: dict[str, Any]) -> str | None:
    """The first result key in which a published run's config and a point's differ, if any.

    train_baseline is not one: a baseline trained beside the coarse model does not change it.
    """
    a, b = sweeps.comparable(published), sweeps.comparable(point)
    return next((k for k in a if k != "train_baseline" and a[k] != b[k]), None)


def reuse_published(points: list[dict[str, Any]], published: dict[Any, str], profile: str,
                    root: str | Path, **common: Any,
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The results of published seeds that stand for points of their cell, and the points left.

    `published` maps a weight decay to a published profile folder (e.g. `figures/full`): each of
    its seeds is the cell's point of that seed when the coarse training and analysis are the
    same; one that differs raises here, before any training.
    """
    named = {float(k): v for k, v in (published or {}).items()}
    cells = {float(p["weight_decay"]) for p in points}
    if set(named) - cells:
        raise ValueError(f"published: weight decays {sorted(set(named) - cells)} are not cells; "
                         f"the cells are {sorted(cells)}")
    configs = sweeps.sweep_configs(points, profile, root, **common)
    by_seed = {wd: {config_of(r, "seed"): r for r in published_runs(folder)}
               for wd, folder in named.items()}
    reused, todo = [], []
    for point, cfg in zip(points, configs, strict=True):
        res = by_seed.get(float(cfg.weight_decay), {}).get(cfg.seed)
        if res is None:
            todo.append(point)
            continue
        key = _differs(res["config"], cfg.to_dict())
        if key is not None:
            raise ValueError(f"published[{cfg.weight_decay!r}]: seed {cfg.seed} in "
                             f"{named[float(cfg.weight_decay)]} has {key}="
                             f"{res['config'].get(key)!r}, the cell's point "
                             f"{cfg.to_dict()[key]!r}")
        reused.append(res)
    return reused, todo


def by_cell(results: list[dict[str, Any]],
            weight_decays: list[float]) -> list[list[dict[str, Any]]]:
    """The runs of each weight decay, in `weight_decays` order."""
    return [[r for r in results if config_of(r, "weight_decay") == wd] for wd in weight_decays]


def holds(results: list[dict[str, Any]], hold: float = HOLD) -> list[dict[str, Any]]:
    """Each run's terminal phase against `hold`: its onset, held fraction and whether it holds."""
    return [{"weight_decay": config_of(r, "weight_decay"), "seed": config_of(r, "seed"),
             "epochs": config_of(r, "epochs"), **phase.terminal_phase_of(r, hold=hold)}
            for r in results]


def cell_summary(runs: list[dict[str, Any]], hold: float = HOLD) -> dict[str, Any]:
    """One cell: its seeds' phase, the spread of KEYS and the control at the end, onset to end."""
    phases = [phase.terminal_phase_of(r, hold=hold) for r in runs]
    return {"weight_decay": config_of(runs[0], "weight_decay"),
            "epochs": config_of(runs[0], "epochs"),
            "step_milestones": config_of(runs[0], "step_milestones"),
            "seeds": [config_of(r, "seed") for r in runs],
            "held_fraction": [p["held_fraction"] for p in phases],
            "onset_epoch": [p["onset_epoch"] for p in phases],
            "holds_phase": all(p["reached"] for p in phases),
            "end": {k: spread([value(r, k) for r in runs]) for k in (*KEYS, CONTROL)},
            "onset_to_end": onset_to_end(runs, KEYS, hold=hold)}


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """End value of `key` in runs `a` minus runs `b`, seed by seed, with its t interval."""
    ends = {config_of(r, "seed"): value(r, key) for r in b}
    rows = [(config_of(r, "seed"), value(r, key) - ends[config_of(r, "seed")])
            for r in a if config_of(r, "seed") in ends]
    rows = [(s, d) for s, d in rows if not math.isnan(d)]
    diffs = [d for _, d in rows]
    return {"seeds": [s for s, _ in rows], "difference": diffs, "spread": spread(diffs),
            "t95": t_interval(diffs)}


def differences(cells: list[list[dict[str, Any]]], summaries: list[dict[str, Any]],
                keys: tuple[str, ...] = KEYS) -> list[dict[str, Any]]:
    """Every pair of cells (earlier minus later), paired by seed; `in_phase` when both hold it."""
    return [{"weight_decays": [summaries[i]["weight_decay"], summaries[j]["weight_decay"]],
             "in_phase": summaries[i]["holds_phase"] and summaries[j]["holds_phase"],
             "measures": {k: paired(cells[i], cells[j], k) for k in keys}}
            for i, j in combinations(range(len(cells)), 2)]


def run_axes(res: dict[str, Any]) -> dict[str, Any] | None:
    """cluster_axis of a run's phase_features.npz (onset and end), summary only; None without."""
    path = phase_features_path(RunConfig(**res["config"]))
    if not path.is_file():
        return None
    axes = cluster_axis.phase_file_axes(path)
    return {"weight_decay": config_of(res, "weight_decay"), "seed": axes["seed"],
            "onset_epoch": axes["onset_epoch"], "end_epoch": axes["end_epoch"],
            "epochs": {e: {k: v for k, v in out.items() if k != "per_superclass"}
                       for e, out in axes["epochs"].items()}}


def axis_at_end(axes: list[dict[str, Any] | None], weight_decay: float) -> dict[str, Any]:
    """Spread over a cell's runs of each AXIS_KEYS mean over super-classes at the end epoch."""
    ends = [a["epochs"][str(a["end_epoch"])] for a in axes
            if a is not None and a["weight_decay"] == weight_decay]
    out = {"runs": len(ends),
           "test_cluster_acc": spread([e["test_cluster_acc"] for e in ends])}
    for key in AXIS_KEYS:
        out[key] = spread([e["mean_over_superclasses"][key]["mean"] for e in ends
                           if key in e["mean_over_superclasses"]])
    return out


def baseline_pairs(folder: str | Path) -> dict[int, dict[str, Any]]:
    """The pairs.json of a published profile's seeds (`folder` and its `seeds/*`), by seed."""
    found = [pairs_file(f) for f in seed_folders(folder)]
    records = [load_json(f) for f in found if f is not None]
    if not records:
        raise ArtifactError(f"baseline_pairs_from: no pairs.json under {folder} (logs/pairs.json "
                            "of a published profile and of its seeds/*)")
    return {rec["seed"]: rec for rec in records}


def _baseline_tests(res: dict[str, Any], record: dict[str, Any]) -> dict[str, float]:
    """Each pair's baseline test separability in `record`, checked against run `res`'s setting."""
    for key in BASELINE_MATCH:
        if record["config"].get(key) != config_of(res, key):
            raise ValueError(f"baseline pairs of seed {record['seed']}: {key} is "
                             f"{record['config'].get(key)!r}, the run's is {config_of(res, key)!r}")
    if any(row.get("baseline") is None for row in record["pairs"]):
        raise ArtifactError(f"baseline pairs of seed {record['seed']}: its run trained no baseline")
    return {row["pair"]: row["baseline"]["test"] for row in record["pairs"]}


def _paired(merged: list[float], base: list[float]) -> dict[str, Any]:
    """Merged and baseline test recovery over seeds, and their difference with its t interval."""
    diffs = [m - b for m, b in zip(merged, base, strict=True)]
    return {"merged_test": spread(merged), "baseline_test": spread(base),
            "merged_minus_baseline": {**spread(diffs), "t95": t_interval(diffs)}}


def cell_pairs(runs: list[dict[str, Any]], baselines: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One cell's merged pairs against its seeds' baselines, per pair and averaged over pairs."""
    rows: dict[str, dict[int, tuple[float, float]]] = {}
    for res in runs:
        seed = config_of(res, "seed")
        if seed not in baselines:
            continue
        base = _baseline_tests(res, baselines[seed])
        names = pair_names(coarse_mapping(config_of(res, "mapping")))
        for name, acc in zip(names, res["recovery"]["per_superclass"], strict=True):
            rows.setdefault(name, {})[seed] = (acc, base[name])
    seeds = sorted({s for by_seed in rows.values() for s in by_seed})
    mean = [[sum(rows[p][s][i] for p in rows) / len(rows) for s in seeds] for i in (0, 1)]
    return {"weight_decay": config_of(runs[0], "weight_decay"), "seeds": seeds,
            "pairs": [{"pair": p, "seeds": sorted(by_seed),
                       **_paired([by_seed[s][0] for s in sorted(by_seed)],
                                 [by_seed[s][1] for s in sorted(by_seed)])}
                      for p, by_seed in rows.items()],
            "mean_over_pairs": _paired(*mean) if seeds else None}


def pair_counterfactual(results: list[dict[str, Any]], weight_decays: list[float],
                        baselines: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Every cell's merged pairs against the shared baseline of each seed (pairs.py `baseline`)."""
    first = next(iter(baselines.values()))["config"]
    return {"baseline": {"profile": first["profile"], "weight_decay": first["weight_decay"],
                         "epochs": first["epochs"], "seeds": sorted(baselines)},
            "split": "test", "interval": "Student-t 95% over seeds, sd ddof=1",
            "cells": [cell_pairs(runs, baselines)
                      for runs in by_cell(results, weight_decays) if runs]}


def setting(results: list[dict[str, Any]], seeds: int) -> str:
    """The setting a figure states: profile, width, data, lr, each cell's budget, seeds."""
    cfg = results[0]["config"]
    per = f"{cfg['train_per_class']}/class" if cfg["train_per_class"] else "full train set"
    budgets = dict.fromkeys(f"wd {config_of(r, 'weight_decay'):g}: {config_of(r, 'epochs')} ep."
                            for r in results)
    return (f"profile {cfg['profile']}: ResNet-18 w={cfg['width']}, {per}, lr {cfg['lr']:g} "
            f"({', '.join(budgets)}), {seeds} seed{'s' if seeds != 1 else ''}")


def summarise(results: list[dict[str, Any]], weight_decays: list[float],
              hold: float = HOLD,
              baselines: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Cells, paired differences, each run's phase, where kept its test clustering axis, and
    with `baselines` (baseline_pairs) the pair counterfactual."""
    cells = by_cell(results, weight_decays)
    empty = [wd for wd, runs in zip(weight_decays, cells, strict=True) if not runs]
    if empty:
        raise ValueError(f"results: no run of weight decay(s) {empty}")
    summaries = [cell_summary(runs, hold) for runs in cells]
    axes = [run_axes(r) for r in results]
    for summary in summaries:
        summary["axis_at_end"] = axis_at_end(axes, summary["weight_decay"])
    return {"setting": setting(results, max(len(c) for c in cells)),
            "hold": hold, "labels": labels((*KEYS, CONTROL), run_classes(results[0])),
            "cells": summaries, "differences": differences(cells, summaries),
            "pairing": PAIRING, "phase": holds(results, hold),
            "axes": [a for a in axes if a is not None],
            "pair_counterfactual": (None if baselines is None
                                    else pair_counterfactual(results, weight_decays, baselines))}
