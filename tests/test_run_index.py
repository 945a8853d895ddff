"""runs.csv: rows from results.json records, and the committed file against its JSON sources."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from nbutils import run_index
from nbutils.config import resolve
from nbutils.paths import FIGURES_DIR
from nbutils.runs import save_json


def record(seed: int, accs: tuple[float, ...], **params: object) -> dict:
    """A results.json-shaped record over checkpoints 0, 10, 20, 30 of a 30-epoch run."""
    cfg = resolve("exp", seed=seed, epochs=30, checkpoint_epochs=[0, 10, 20, 30],
                  **params).to_dict()
    history = [{"epoch": e, "coarse_train_acc": a} for e, a in zip((0, 10, 20, 30), accs,
                                                                   strict=True)]
    return {"config": cfg, "history": history, "coarse": {"test_acc": 0.8},
            "baseline": None,
            "recovery": {"train_cluster_acc": 0.9, "test_acc_true_coarse": 0.85,
                         "test_acc_pred_coarse": 0.7},
            "nc": {"coarse": {"nc1": 0.5}, "fine_structure": {"fine_variance_fraction_mean": 0.3}}}


def test_row_counts_steps_and_the_terminal_phase(tmp_path: Path) -> None:
    row = run_index.run_row(record(1, (0.1, 0.9, 1.0, 1.0), train_per_class=64), "dynamics")
    # 64 x 10 images at batch 128: 5 steps an epoch; onset at epoch 20 holds 1/3 of training.
    assert (row["steps"], row["reached_terminal_phase"], row["tpt_epoch"], row["tpt_step"]) == (
        150, True, 20, 100)
    assert run_index.held_fraction(row) == pytest.approx(1 / 3)
    late = run_index.run_row(record(1, (0.1, 0.2, 0.3, 0.4)), "dynamics")
    assert math.isnan(run_index.held_fraction(late))
    assert (row["recovery_test_a"], row["nc1_coarse"], row["between_fine_share"]) == (
        0.85, 0.5, 0.3)
    assert math.isnan(row["recovery_test_c"]) and math.isnan(row["baseline_test_acc"])
    assert row["amp"] == "unrecorded"
    fp32 = run_index.run_row({**record(1, (0.1, 0.9, 1.0, 1.0)), "amp": "off"}, "grid")
    assert fp32["amp"] == "off"
    stored = tmp_path / "dynamics.json"
    stored.write_text(json.dumps({"runs": [{**row, "amp": None}]}))
    assert run_index.experiment_rows(stored)[0]["amp"] == "unrecorded"
    late = run_index.run_row(record(2, (0.1, 0.2, 0.3, 1.0)), "grid")
    assert not late["reached_terminal_phase"] and late["tpt_step"] is None


def test_index_gathers_experiment_rows_and_profile_seeds(tmp_path: Path) -> None:
    exp, cpu = tmp_path / "experiments", tmp_path / "cpu"
    rows = [run_index.run_row(record(s, (0.1, 0.9, 1.0, 1.0)), "dynamics") for s in (0, 1)]
    save_json(exp / "dynamics.json", {"series": {}, "runs": rows})
    # The same run listed by a second experiment is one row naming both.
    save_json(exp / "grid.json", {"runs": [{**rows[1], "experiment": "grid"}]})
    save_json(exp / "split.json", {"series": {}})
    save_json(exp / "pilot.json", {"runs": [{"not": "an index row"}]})
    save_json(exp / "synthetic.json", {
        "mixture": {"n_per_cluster": 250, "num_coarse": 4}, "training": {
            "hidden": 64, "lr": 0.01, "weight_decay": 5e-4},
        "runs": [{"separation": 8.0, "seed": 0, "epochs": 100, "final_coarse_train_acc": 1.0,
                  "reached_terminal_phase": True, "tpt_epoch": 7, "recovery_train": 0.99,
                  "recovery_test": 0.98, "fine_variance_fraction_end": 0.3,
                  "nc1_coarse_end": 0.13}]})
    save_json(cpu / "results.json", record(0, (0.1, 0.5, 0.9, 0.95)))
    save_json(cpu / "seeds" / "seed1" / "results.json", record(1, (0.1, 0.5, 0.9, 0.96)))
    save_json(cpu / "axis" / "seed2" / "results.json", record(2, (0.1, 0.5, 0.9, 0.97)))
    frame = run_index.write_index(exp, {"cpu": cpu}, exp / "runs.csv")
    assert list(frame["experiment"]) == ["cpu", "cpu", "cpu-axis", "dynamics", "dynamics+grid",
                                         "synthetic"]
    # 2 x 250 points per coarse class, 4 classes at batch 128: 16 steps an epoch.
    synthetic = frame.iloc[-1]
    assert (synthetic["steps"], synthetic["tpt_step"], synthetic["width"]) == (1600, 112, 64)
    assert list(frame.columns) == list(run_index.COLUMNS)
    back = pd.read_csv(exp / "runs.csv")
    assert back["final_clean_coarse_train_acc"].tolist() == [0.95, 0.96, 0.97, 1.0, 1.0, 1.0]


def test_committed_index_matches_its_json_sources() -> None:
    committed = FIGURES_DIR / "experiments" / "runs.csv"
    if not committed.is_file():
        pytest.fail("figures/experiments/runs.csv is missing: python -m nbutils runs-index")
    built = run_index.build_index(FIGURES_DIR / "experiments",
                                  {p: FIGURES_DIR / p for p in run_index.SEED_PROFILES})
    expected = pd.read_csv(io.StringIO(built.to_csv(index=False)))
    pd.testing.assert_frame_equal(pd.read_csv(committed), expected, check_exact=False)
