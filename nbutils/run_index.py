"""One tidy index of every trained run: `figures/experiments/runs.csv`, one row per run.

Rows come from results.json records (docs/protocol.md, section 11): each experiment notebook
(06-10, 12) stores the rows of its runs in its results JSON under `"runs"`, and the seeds of the
published profiles (SEED_PROFILES: `cpu`, `full`) are read from `figures/<profile>/results.json`
and `figures/<profile>/seeds/*/results.json`; the runs a profile published for the test-clustering
axis (`figures/<profile>/axis/*/results.json`, e.g. `scripts/tpt_axis.py`) are rows of experiment
`<profile>-axis`. `build_index`
gathers them; `python -m nbutils runs-index` writes the CSV, which readers and our figures load
with pandas. With `val_per_class` set, a run was evaluated on a validation split carved from
train, and its `recovery_test_*` and `*_test_acc` columns are validation numbers. `amp` is the
precision the run trained in, as its results.json records it (`bfloat16` autocast, or `off`:
float32; the synthetic model of notebook 10 always trains in float32), and `unrecorded` for runs
trained before the precision was recorded (the 06 dynamics and 09 split runs).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from nbutils import phase
from nbutils.config import steps_per_epoch
from nbutils.metrics import value
from nbutils.runs import UNRECORDED_AMP, load_json
from nbutils.seeds import seed_results

COLUMNS = (
    "experiment", "mapping", "lr", "weight_decay", "seed", "width", "train_per_class",
    "val_per_class", "steps", "epochs", "amp",
    "final_clean_coarse_train_acc", "reached_terminal_phase", "tpt_epoch", "tpt_step",
    "tpt_held_fraction", "recovery_train", "recovery_test_a", "recovery_test_b",
    "recovery_test_c", "recovery_test_d",
    "between_fine_share", "nc1_coarse", "coarse_test_acc", "baseline_test_acc",
)
# Published profiles whose seeds, and axis runs, are rows of their own (folders under figures/).
SEED_PROFILES = ("cpu", "full", "tpt")
# The results JSON of notebooks 06-10 and 12, whose `runs` lists the index gathers.
EXPERIMENT_FILES = ("dynamics.json", "grid.json", "hierarchies.json", "split.json",
                    "synthetic.json", "strength.json")
# Where each column's number sits in a results.json record.
PATHS = {
    "recovery_train": "recovery.train_cluster_acc",
    "recovery_test_a": "recovery.test_acc_true_coarse",
    "recovery_test_b": "recovery.test_acc_pred_coarse",
    "recovery_test_c": "recovery.test_cluster_acc_true_coarse",
    "recovery_test_d": "recovery.test_cluster_acc_pred_coarse",
    "between_fine_share": "nc.fine_structure.fine_variance_fraction_mean",
    "nc1_coarse": "nc.coarse.nc1",
    "coarse_test_acc": "coarse.test_acc",
    "baseline_test_acc": "baseline.test_acc",
}


def _complete(row: dict[str, Any]) -> dict[str, Any]:
    """`row` in COLUMNS order, NaN for every column it lacks (`amp`: UNRECORDED_AMP)."""
    return {col: row.get(col, UNRECORDED_AMP if col == "amp" else math.nan) for col in COLUMNS}


def _phase_columns(reached: bool, onset_epoch: int | None, per_epoch: int) -> dict[str, Any]:
    """Whether the run reached the terminal phase, and its onset in epochs and steps if so."""
    onset = onset_epoch if reached else None
    return {"reached_terminal_phase": reached, "tpt_epoch": onset,
            "tpt_step": None if onset is None else onset * per_epoch}


def held_fraction(row: dict[str, Any]) -> float:
    """The share of training a row's run spent in the terminal phase; NaN where not reached."""
    onset, steps = row.get("tpt_step"), row.get("steps")
    if onset is None or steps is None or math.isnan(onset) or math.isnan(steps):
        return math.nan
    return 1 - onset / steps


def _recipe_columns(cfg: dict[str, Any]) -> dict[str, Any]:
    """The training recipe's columns of a run's config, its budget in steps and epochs."""
    return {"lr": cfg["lr"], "weight_decay": cfg["weight_decay"], "seed": cfg["seed"],
            "width": cfg["width"], "train_per_class": cfg["train_per_class"],
            "val_per_class": cfg.get("val_per_class"),
            "steps": cfg["epochs"] * steps_per_epoch(cfg), "epochs": cfg["epochs"]}


def run_row(res: dict[str, Any], experiment: str) -> dict[str, Any]:
    """The index row of one results.json record (a run of `experiment`)."""
    cfg = res["config"]
    tpt = phase.terminal_phase_of(res)
    return _complete({
        "experiment": experiment, "mapping": str(cfg["mapping"]), **_recipe_columns(cfg),
        "amp": res.get("amp") or UNRECORDED_AMP,
        "final_clean_coarse_train_acc": res["history"][-1]["coarse_train_acc"],
        **_phase_columns(tpt["reached"], tpt["onset_epoch"], steps_per_epoch(cfg)),
        **{col: value(res, path) for col, path in PATHS.items()}})


def split_row(res: dict[str, Any], model: str) -> dict[str, Any]:
    """The index row of one model of a 20-label split run (notebook 09).

    Its "coarse" labels are the 10 real classes and its "fine" labels the 20 random halves:
    `final_clean_coarse_train_acc` is the clean train accuracy on the labels `model` was
    trained on (halves for the 20-label model), the terminal phase is read on those labels, and
    recovery is that of the halves inside each class.
    """
    cfg, part = res["config"], res[model]
    final, tpt = part["history"][-1], part["phase"]
    return _complete({
        "experiment": f"split-{model}", "mapping": "halves", **_recipe_columns(cfg),
        "amp": part.get("amp") or UNRECORDED_AMP,
        "final_clean_coarse_train_acc": final["own_train_acc"],
        **_phase_columns(tpt["reached"], tpt["onset_epoch"], steps_per_epoch(cfg)),
        "recovery_train": final["train_cluster_acc"],
        "recovery_test_a": final["test_acc_true_class"],
        "between_fine_share": final["fine_variance_fraction"],
        "coarse_test_acc": final["class_test_acc"]})


def synthetic_row(row: dict[str, Any], sweep: dict[str, Any]) -> dict[str, Any]:
    """The index row of one synthetic run (notebook 10) from synthetic.json's `runs` entry.

    `mapping` names the Gaussian mixture's fine-cluster separation, `width` is the hidden
    layer, `train_per_class` the train points per coarse class (two clusters), `steps` the SGD
    steps at batch 128; the test columns are the hidden layer's recovery (a) and NC1.
    """
    mix, train = sweep["mixture"], sweep["training"]
    per_class = 2 * mix["n_per_cluster"]
    per_epoch = math.ceil(per_class * mix["num_coarse"] / train.get("batch_size", 128))
    return _complete({
        "experiment": "synthetic", "mapping": f"gaussian separation={row['separation']:g}",
        "lr": train["lr"], "weight_decay": train["weight_decay"], "seed": row["seed"],
        "width": train["hidden"], "train_per_class": per_class,
        "steps": row["epochs"] * per_epoch, "epochs": row["epochs"], "amp": "off",
        "final_clean_coarse_train_acc": row["final_coarse_train_acc"],
        **_phase_columns(row["reached_terminal_phase"], row["tpt_epoch"], per_epoch),
        "recovery_train": row["recovery_train"], "recovery_test_a": row["recovery_test"],
        "between_fine_share": row["fine_variance_fraction_end"],
        "nc1_coarse": row["nc1_coarse_end"]})


def experiment_rows(path: Path) -> list[dict[str, Any]]:
    """The index rows an experiment's results JSON holds under `runs` (none if it has none)."""
    data = load_json(path)
    if path.name == "synthetic.json":
        return [synthetic_row(r, data) for r in data.get("runs", [])]
    # Rows stored before the precision was recorded hold null (or NaN) there.
    return [{**row, "amp": row["amp"] if isinstance(row.get("amp"), str) else UNRECORDED_AMP}
            for row in data.get("runs", [])]


def build_index(experiments_dir: Path, profile_dirs: dict[str, Path]) -> pd.DataFrame:
    """Rows of every experiment JSON's `runs` and of every seed and axis run of the profiles.

    A run shared by several experiments (e.g. a mod5 run of the hierarchies that is also the
    grid's chosen cell) is one row, its `experiment` naming them all, joined by '+'.
    """
    rows: list[dict[str, Any]] = []
    for name in EXPERIMENT_FILES:
        if (Path(experiments_dir) / name).is_file():
            rows += experiment_rows(Path(experiments_dir) / name)
    for name, folder in profile_dirs.items():
        rows += [run_row(res, name) for res in seed_results(Path(folder))]
        rows += [run_row(load_json(f), f"{name}-axis")
                 for f in sorted(Path(folder).glob("axis/*/results.json"))]
    # Derived here, not stored, so that rows archived before the column existed have it too.
    rows = [{**row, "tpt_held_fraction": held_fraction(row)} for row in rows]
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = repr([row.get(c) for c in COLUMNS if c != "experiment"])
        if key in merged:
            names = merged[key]["experiment"].split("+")
            merged[key]["experiment"] = "+".join(sorted({*names, row["experiment"]}))
        else:
            merged[key] = dict(row)
    frame = pd.DataFrame(list(merged.values()), columns=list(COLUMNS))
    return frame.sort_values(["experiment", "mapping", "lr", "weight_decay", "seed"],
                             kind="stable", ignore_index=True)


def write_index(experiments_dir: Path, profile_dirs: dict[str, Path], out: Path) -> pd.DataFrame:
    """Write build_index as CSV to `out`; the frame."""
    frame = build_index(experiments_dir, profile_dirs)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    return frame
