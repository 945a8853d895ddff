"""The records notebooks 06-10 and 12 save as their results JSON, one builder per notebook.

Each record holds the notebook's summaries and, under `"runs"`, the index rows of its runs
(nbutils.run_index), so that `figures/experiments/runs.csv` can be rebuilt from the records alone.
"""

from __future__ import annotations

from typing import Any

from nbutils.pairs import SOURCES
from nbutils.run_index import run_row, split_row
from nbutils.summaries import terminal_changes
from nbutils.synthetic import FEATURE_NORM

# The pilot that chose notebook 10's mixture, kept beside its record.
SYNTHETIC_PILOT = "figures/experiments/synthetic_pilot.json"
# The pilot that checks each weight decay's budget on train accuracy (scripts/full_pilot.py).
FULL_WD_PILOT = "figures/full/wd_pilot.json"


def dynamics(summary: dict[str, Any], changes: dict[str, Any], results: list[dict[str, Any]],
             cpu_summary: dict[str, Any] | None) -> dict[str, Any]:
    """dynamics.json: the seeds' dynamics, their terminal-phase changes and the cpu run's."""
    return {"summary": summary, "terminal_changes": changes,
            "runs": [run_row(r, "dynamics") for r in results], "cpu": cpu_summary,
            "cpu_terminal_changes": terminal_changes(cpu_summary) if cpu_summary else None}


def grid(grid_summary: dict[str, Any], best: dict[str, Any], chosen_summary: dict[str, Any],
         results: list[dict[str, Any]], chosen: list[dict[str, Any]]) -> dict[str, Any]:
    """grid.json: the lr x weight-decay grid, its best cell and that cell's test runs."""
    return {**grid_summary, "best": best, "chosen_test": chosen_summary,
            "runs": [*(run_row(r, "grid") for r in results),
                     *(run_row(r, "grid-chosen") for r in chosen)]}


def hierarchies(setting: str, summary: dict[str, Any], merged_pairs: list[dict[str, Any]],
                split: str, pair_rows: list[dict[str, Any]], correlations: dict[str, Any],
                results: list[dict[str, Any]]) -> dict[str, Any]:
    """hierarchies.json: the mappings over seeds, their merged pairs and the pair controls."""
    return {"setting": setting, "by_mapping": summary, "pairs": merged_pairs,
            "pair_controls": {"split": split, "sources": SOURCES, "rows": pair_rows,
                              "correlations": correlations},
            "runs": [run_row(r, "hierarchies") for r in results]}


def split(setting: str, summary: dict[str, Any], split_runs: list[dict[str, Any]],
          models: list[str]) -> dict[str, Any]:
    """split.json: the halves' separation over seeds beside real merged pairs."""
    return {"setting": setting, "summary": summary,
            "runs": [split_row(r, m) for r in split_runs for m in models]}


def synthetic(setting: str, mixture: dict[str, Any], training: dict[str, Any], seeds: list[int],
              rows: list[dict[str, Any]], run_rows: list[dict[str, Any]],
              sweep: list[dict[str, Any]]) -> dict[str, Any]:
    """synthetic.json: the separation sweep per separation, per run and over training."""
    return {"setting": setting, "mixture": mixture, "training": training, "seeds": seeds,
            "feature_norm": training.get("feature_norm", FEATURE_NORM),
            "pilot": SYNTHETIC_PILOT, "by_separation": rows, "runs": run_rows,
            "histories": [{k: r[k] for k in ("separation", "seed", "history", "train_acc")}
                          for r in sweep]}


def strength(summary: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """strength.json: the weight-decay cells, their paired differences and the budget pilot."""
    return {**summary, "pilot": FULL_WD_PILOT,
            "runs": [run_row(r, "strength") for r in results]}
