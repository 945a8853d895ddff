"""Tables for the notebooks: configs, logs, metrics and experiment summaries as DataFrames."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from IPython.display import Markdown

from nbutils import checks
from nbutils.config import RunConfig
from nbutils.data import mapping_table
from nbutils.metrics import label, value
from nbutils.pairs import SOURCES, SPLITS, source_mean
from nbutils.summaries import SEPARATION_KEYS


def config_frame(cfg: RunConfig) -> pd.DataFrame:
    """Every parameter of a run, one row each."""
    rows = [(k, repr(v)) for k, v in cfg.to_dict().items()]
    return pd.DataFrame(rows, columns=["parameter", "value"]).set_index("parameter")


def mapping_frame(fine_to_coarse: np.ndarray, names: list[str]) -> pd.DataFrame:
    """One row per super-class: the fine classes it merges."""
    table = mapping_table(fine_to_coarse, names)
    return pd.DataFrame({"fine classes": [" + ".join(v) for v in table.values()]},
                        index=pd.Index(list(table), name="super-class"))


def log_frame(log: list[dict]) -> pd.DataFrame:
    """A per-epoch training log."""
    return pd.DataFrame(log).set_index("epoch") if log else pd.DataFrame()


def files_frame(paths: list[Path]) -> pd.DataFrame:
    """Files with their sizes in MiB."""
    return pd.DataFrame(
        [(str(p), round(Path(p).stat().st_size / 2**20, 2)) for p in paths],
        columns=["file", "MiB"],
    )


def nc_frame(history: list[dict]) -> pd.DataFrame:
    """Collapse metrics over checkpoints, columns `<labels>/<metric>`."""
    rows = []
    for h in history:
        row = {"epoch": h["epoch"], "train_acc": h["train_acc"], "test_acc": h["test_acc"]}
        for level in ("coarse", "fine"):
            row.update({f"{level}/{k}": v for k, v in h["nc"][level].items()})
        row.update({label(k): value(h, k) for k in SEPARATION_KEYS})
        rows.append(row)
    return pd.DataFrame(rows).set_index("epoch")


def recovery_frame(history: list[dict]) -> pd.DataFrame:
    """Recovery metrics over checkpoints (per-super-class lists left out)."""
    rows = [{"epoch": h["epoch"], **{k: v for k, v in h["recovery"].items()
                                     if not isinstance(v, list)}} for h in history]
    return pd.DataFrame(rows).set_index("epoch")


def controls_frame(controls: dict[str, dict]) -> pd.DataFrame:
    """Control recoveries side by side."""
    return pd.DataFrame({name: {k: v for k, v in m.items() if not isinstance(v, list)}
                         for name, m in controls.items()})


def phase_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """Each seed's terminal phase in a dynamics summary (summaries.dynamics_summary)."""
    return pd.DataFrame(summary["phase"], index=pd.Index(summary["seeds"], name="seed"))


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


def _t95_text(ci: Sequence[float] | None) -> str:
    """'[low, high]' of a t interval, '-' below 2 seeds."""
    return "-" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def strength_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per weight-decay cell (nbutils.strength): budget, phase, and the measures at the
    end as mean ± sample sd over seeds."""
    rows = []
    for cell in summary["cells"]:
        row = {"weight decay": cell["weight_decay"], "epochs": cell["epochs"],
               "seeds": cell["seeds"], "held fraction": cell["held_fraction"],
               "holds the phase": cell["holds_phase"]}
        for key, s in cell["end"].items():
            row[summary["labels"][key]] = f"{s['mean']:.4f} ± {s['sd']:.4f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("weight decay")


def onset_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """Per cell and measure: seeds holding the phase, mean at onset and end, change, t interval."""
    rows = []
    for cell in summary["cells"]:
        for m in cell["onset_to_end"]["measures"].values():
            rows.append({"weight decay": cell["weight_decay"], "measure": m["label"],
                         "seeds": m["change_spread"]["n"],
                         "at onset (mean)": np.mean(m["at_onset"]) if m["at_onset"] else None,
                         "end (mean)": np.mean(m["end"]) if m["end"] else None,
                         "change (mean)": m["change_spread"]["mean"],
                         "change t95": _t95_text(m["change_t95"])})
    return pd.DataFrame(rows).set_index(["weight decay", "measure"])


def difference_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """Per pair of cells and measure: the end difference paired by seed and its t interval."""
    rows = []
    for diff in summary["differences"]:
        a, b = diff["weight_decays"]
        for key, d in diff["measures"].items():
            rows.append({"cells": f"wd {a:g} - wd {b:g}", "measure": summary["labels"][key],
                         "both hold the phase": diff["in_phase"], "seeds": d["spread"]["n"],
                         "difference (mean)": d["spread"]["mean"],
                         "difference t95": _t95_text(d["t95"])})
    return pd.DataFrame(rows).set_index(["cells", "measure"])


def axis_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """Per cell: what the 2-means split of the test features follows at the end (nbutils.strength,
    nbutils.cluster_axis), mean over the runs that kept their phase features."""
    return pd.DataFrame({f"wd {c['weight_decay']:g}": {
        key: s["mean"] if isinstance(s, dict) else s for key, s in c["axis_at_end"].items()}
        for c in summary["cells"]})


def strength_pairs_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """Per cell and merged pair: test recovery merged and in its seed's baseline, their paired
    difference and its t interval over seeds (nbutils.strength.pair_counterfactual)."""
    rows = []
    for cell in summary["pair_counterfactual"]["cells"]:
        for p in cell["pairs"]:
            d = p["merged_minus_baseline"]
            rows.append({"cell": f"wd {cell['weight_decay']:g}", "pair": p["pair"],
                         "seeds": d["n"], "merged (mean)": p["merged_test"]["mean"],
                         "baseline (mean)": p["baseline_test"]["mean"],
                         "merged - baseline (mean)": d["mean"],
                         "merged - baseline t95": _t95_text(d["t95"])})
    return pd.DataFrame(rows).set_index(["cell", "pair"])


def grid_frame(grid: dict[str, Any]) -> pd.DataFrame:
    """One row per grid cell, one column per metric of GRID_KEYS (means over seeds)."""
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


def _cell(stats: dict[str, Any] | None) -> str:
    """'89.1 ± 0.6%' (sample sd), '89.1%' for one seed, '-' when not measured."""
    if stats is None or stats["n"] == 0:
        return "-"
    if math.isnan(stats["sd"]):
        return f"{100 * stats['mean']:.1f}%"
    return f"{100 * stats['mean']:.1f} ± {100 * stats['sd']:.1f}%"


def pair_frame(rows: Sequence[dict[str, Any]], split: str = "test") -> pd.DataFrame:
    """One line per (mapping, pair), lowest merged recovery first: mean ± sd of every source."""
    checks.choice("split", split, SPLITS)
    lines = [{"mapping": r["mapping"], "pair": r["pair"], "seeds": len(r["seeds"]),
              **{label: _cell(r[src] and r[src][split]) for src, label in SOURCES.items()},
              "merged - baseline": _difference(r, split)}
             for r in sorted(rows, key=lambda r: source_mean(r, "merged", split))]
    return pd.DataFrame(lines).set_index(["mapping", "pair"])


def _difference(row: dict[str, Any], split: str) -> str:
    """Mean merged minus mean baseline accuracy in points; '-' without a baseline."""
    gap = source_mean(row, "merged", split) - source_mean(row, "baseline", split)
    return "-" if math.isnan(gap) else f"{100 * gap:+.1f} pts"


def correlation_frame(corr: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One line per control: pairs, Pearson r, Spearman rho and the fitted line."""
    return pd.DataFrame([{"against": SOURCES[s], **c} for s, c in corr.items()]).set_index(
        "against")


def separation_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Mean ± sample sd over seeds per separation, for the final and initial recovery and NC1."""
    keys = ("final_recovery_test", "init_recovery_test", "input_recovery", "init_nc1_coarse",
            "final_nc1_coarse", "final_nc1_fine", "final_fine_variance_fraction", "tpt_epoch")
    return pd.DataFrame([{"separation": r["separation"], "seeds": r["seeds"],
                          "terminal phase": f"{r['terminal_phase_reached']}/{r['seeds']}",
                          **{k: f"{r[k]['mean']:.4g} ± {r[k]['sd']:.2g}" for k in keys}}
                         for r in rows]).set_index("separation")


def synthetic_runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (separation, seed) of synthetic.run_summary_row records."""
    return pd.DataFrame(rows).set_index(["separation", "seed"])


def markdown(text: str) -> Markdown:
    """Rich markdown output in Jupyter (plain text elsewhere)."""
    return Markdown(text)
