"""results.json (SPEC 10) and its markdown table, assembled from a run's artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbutils.analysis import load_history, trained_models
from nbutils.config import RunConfig
from nbutils.runs import load_json, load_timings, model_dir, save_json, versions

PAPER_TEST_ACC = 0.93
NC_KEYS = ("nc1", "nc1_unnormalised", "nc2_equinorm", "nc2_equiangular", "nc2_etf_distance",
           "nc3", "nc4")


def _final(cfg: RunConfig, model: str) -> dict[str, Any]:
    """The collapse.json entry of `model`'s last checkpoint."""
    return load_json(model_dir(cfg, model) / "collapse.json")[-1]


def _train_seconds(cfg: RunConfig, model: str) -> float:
    """Sum of the epoch times in `model`'s training log."""
    return float(sum(row["seconds"] for row in load_json(model_dir(cfg, model) / "log.json")))


def build_results(cfg: RunConfig) -> dict[str, Any]:
    """The SPEC 10 record of a run whose stages 01-04 have finished."""
    coarse = _final(cfg, "coarse")
    history = load_history(cfg)
    ctrl = load_json(Path(cfg.run_dir) / "controls.json")
    meta = load_json(model_dir(cfg, "coarse") / "train_meta.json")
    timings = load_timings(cfg)
    has_baseline = "baseline" in trained_models(cfg)
    baseline = _final(cfg, "baseline") if has_baseline else None
    recovery = history[-1]["recovery"]
    nc = coarse["nc"]
    out = {
        "profile": cfg.profile, "mapping": cfg.mapping, "width": cfg.width,
        "epochs": cfg.epochs, "seed": cfg.seed, "dataset": cfg.dataset,
        "device": meta["device"], "amp": meta["amp"], "versions": versions(),
        "train_size": meta["train_size"], "test_size": meta["test_size"],
        "coarse": {"train_acc": coarse["train_acc"], "test_acc": coarse["test_acc"]},
        "baseline": ({"train_acc": baseline["train_acc"], "test_acc": baseline["test_acc"]}
                     if baseline else None),
        "recovery": recovery,
        "controls": ctrl,
        "nc": {"coarse": {k: nc["coarse"].get(k) for k in NC_KEYS},
               "fine": {k: nc["fine"].get(k) for k in NC_KEYS},
               "fine_structure": nc["fine_structure"]},
        "wall_seconds": {
            "train": _train_seconds(cfg, "coarse"),
            "baseline": _train_seconds(cfg, "baseline") if has_baseline else None,
            "analysis": sum(v for k, v in timings.items() if k != "umap"),
            "stages": timings,
        },
        "config": cfg.to_dict(),
        "history": history,
    }
    if baseline:
        out["ratio_to_baseline"] = recovery["test_acc_pred_coarse"] / baseline["test_acc"]
        out["history_baseline"] = load_json(model_dir(cfg, "baseline") / "collapse.json")
    return out


def _pct(x: float | None) -> str:
    """A fraction as a percentage string ('-' when missing)."""
    return "-" if x is None else f"{100 * x:.1f}%"


def table_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    """(quantity, value) rows of the key numbers of one results.json."""
    rec, base = res["recovery"], res.get("baseline") or {}
    ratio = res.get("ratio_to_baseline")
    return [
        ("coarse (5-way) test accuracy", _pct(res["coarse"]["test_acc"])),
        ("coarse train accuracy (eval mode)", _pct(res["coarse"]["train_acc"])),
        ("recovered 10-way, train clustering", _pct(rec["train_cluster_acc"])),
        ("recovered 10-way test, true coarse (3a)", _pct(rec["test_acc_true_coarse"])),
        ("recovered 10-way test, predicted coarse (3b)", _pct(rec["test_acc_pred_coarse"])),
        ("10-label baseline test accuracy", _pct(base.get("test_acc"))),
        ("ratio 3b / baseline", "-" if ratio is None else f"{ratio:.3f}"),
        ("linear probe on recovered labels (test)", _pct(rec["linear_probe_test_acc"])),
        ("NMI / ARI (train)", f"{rec['nmi']:.3f} / {rec['ari']:.3f}"),
        ("control: random-init features (3a)",
         _pct(res["controls"]["random_init"]["test_acc_true_coarse"])),
        ("control: raw pixels (3a)", _pct(res["controls"]["raw_pixels"]["test_acc_true_coarse"])),
        ("NC1 coarse / fine (end of training)",
         f"{res['nc']['coarse']['nc1']:.3g} / {res['nc']['fine']['nc1']:.3g}"),
        ("training wall time (coarse + baseline)",
         f"{(res['wall_seconds']['train'] + (res['wall_seconds']['baseline'] or 0)) / 60:.1f} min"),
        ("paper (ResNet-18 w=64, GPU), 3b", f"{100 * PAPER_TEST_ACC:.0f}% (paper's figure)"),
    ]


def table_title(res: dict[str, Any]) -> str:
    """One line saying which run a table describes."""
    return (f"profile {res['profile']}, mapping {res['mapping']}, width {res['width']}, "
            f"{res['epochs']} epochs, seed {res['seed']}, {res['device']}")


def markdown_table(res: dict[str, Any]) -> str:
    """The key numbers of one results.json as a markdown table."""
    head = table_title(res) + "\n\n"
    lines = ["| quantity | value |", "| --- | --- |"]
    lines += [f"| {q} | {v} |" for q, v in table_rows(res)]
    return head + "\n".join(lines) + "\n"


def write_results(cfg: RunConfig) -> dict[str, Any]:
    """Build results.json and results.md in the run directory; returns the record."""
    res = build_results(cfg)
    root = Path(cfg.run_dir)
    save_json(root / "results.json", res)
    (root / "results.md").write_text(markdown_table(res))
    return res
