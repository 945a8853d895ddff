"""The records notebooks 06-09 save: their summaries and the index rows of their runs."""

from __future__ import annotations

from pathlib import Path

from test_experiments import fake_result

from nbutils import records, run_index, summaries
from nbutils.config import resolve
from nbutils.runs import save_json


def test_each_record_holds_the_index_rows_of_its_runs(tmp_path: Path) -> None:
    results = [fake_result(0), fake_result(1)]
    summary = summaries.dynamics_summary(results)
    changes = summaries.terminal_changes(summary)
    grid = summaries.grid_summary(results, [0.1], [5e-4])
    best = summaries.best_cell(grid, "recovery.test_acc_true_coarse")
    built = {
        "dynamics.json": records.dynamics(summary, changes, results, None),
        "grid.json": records.grid(grid, best, {}, results, results[:1]),
        "hierarchies.json": records.hierarchies("setting", {}, [], "test", [], {}, results),
    }
    assert built["dynamics.json"]["cpu_terminal_changes"] is None
    assert built["grid.json"]["best"] == best and built["grid.json"]["lrs"] == [0.1]
    assert built["hierarchies.json"]["pair_controls"]["split"] == "test"
    for name, record in built.items():
        rows = run_index.experiment_rows(save_json(tmp_path / name, record))
        assert [r["seed"] for r in rows] == ([0, 1, 0] if name == "grid.json" else [0, 1])


def test_the_split_record_has_a_row_per_run_and_model() -> None:
    final = {"own_train_acc": 1.0, "train_cluster_acc": 0.9, "test_acc_true_class": 0.5,
             "fine_variance_fraction": 0.1, "class_test_acc": 0.7}
    run = {"config": resolve("tpt").to_dict(),
           "20-label": {"history": [final], "phase": {"reached": True, "onset_epoch": 10}}}
    record = records.split("setting", {}, [run, run], ["20-label"])
    assert [r["experiment"] for r in record["runs"]] == ["split-20-label"] * 2
