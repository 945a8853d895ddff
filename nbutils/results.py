"""results.json (SPEC 10) and its markdown table, assembled from a run's artifacts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbutils.analysis import load_history
from nbutils.config import RunConfig
from nbutils.runs import (
    atomic_write,
    load_json,
    load_timings,
    model_dir,
    save_json,
    versions,
)

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
    has_baseline = "baseline" in cfg.models
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


def _wall(res: dict[str, Any]) -> str:
    """Training wall time of both models, in minutes."""
    w = res["wall_seconds"]
    return f"{(w['train'] + (w['baseline'] or 0)) / 60:.1f} min"


ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("coarse (5-way) test accuracy", lambda r: _pct(r["coarse"]["test_acc"])),
    ("coarse train accuracy (eval mode)", lambda r: _pct(r["coarse"]["train_acc"])),
    ("recovered 10-way, train clustering", lambda r: _pct(r["recovery"]["train_cluster_acc"])),
    ("recovered 10-way test, true coarse (3a)",
     lambda r: _pct(r["recovery"]["test_acc_true_coarse"])),
    ("**recovered 10-way test, predicted coarse (3b)**",
     lambda r: _pct(r["recovery"]["test_acc_pred_coarse"])),
    ("**10-label baseline test accuracy**", lambda r: _pct((r["baseline"] or {}).get("test_acc"))),
    ("ratio 3b / baseline",
     lambda r: "-" if r.get("ratio_to_baseline") is None else f"{r['ratio_to_baseline']:.3f}"),
    ("linear probe on recovered labels (test)",
     lambda r: _pct(r["recovery"]["linear_probe_test_acc"])),
    ("NMI / ARI (train)", lambda r: f"{r['recovery']['nmi']:.3f} / {r['recovery']['ari']:.3f}"),
    ("control: random-init features (3a)",
     lambda r: _pct(r["controls"]["random_init"]["test_acc_true_coarse"])),
    ("control: raw pixels (3a)",
     lambda r: _pct(r["controls"]["raw_pixels"]["test_acc_true_coarse"])),
    ("NC1 coarse / fine (end of training)",
     lambda r: f"{r['nc']['coarse']['nc1']:.3g} / {r['nc']['fine']['nc1']:.3g}"),
    ("training wall time (coarse + baseline)", _wall),
)
PAPER_ROW = "**recovered 10-way test, predicted coarse (3b)**"
README_PROFILES = ("cpu", "paper")
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def table_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    """(quantity, value) rows of the key numbers of one results.json."""
    return [(label, value(res)) for label, value in ROWS]


def table_title(res: dict[str, Any]) -> str:
    """One line saying which run a table describes."""
    return (f"profile {res['profile']}, mapping {res['mapping']}, width {res['width']}, "
            f"{res['epochs']} epochs, seed {res['seed']}, {res['device']}")


def markdown_table(res: dict[str, Any]) -> str:
    """The key numbers of one results.json as a markdown table."""
    head = table_title(res) + "\n\n"
    lines = ["| quantity | value |", "| --- | --- |"]
    lines += [f"| {q} | {v} |" for q, v in table_rows(res)]
    lines.append(f"| paper's figure (ResNet-18 w=64, GPU), 3b | {100 * PAPER_TEST_ACC:.0f}% |")
    return head + "\n".join(lines) + "\n"


def write_results(cfg: RunConfig) -> dict[str, Any]:
    """Build results.json and results.md in the run directory; returns the record."""
    res = build_results(cfg)
    root = Path(cfg.run_dir)
    save_json(root / "results.json", res)
    atomic_write(root / "results.md", lambda p: p.write_text(markdown_table(res)))
    return res


def readme_table(figures_dir: Path) -> str:
    """Markdown table of the published profiles' results beside the paper's figure."""
    found = {p: load_json(figures_dir / p / "results.json") for p in README_PROFILES
             if (figures_dir / p / "results.json").is_file()}
    heads = [f"`{p}`: " + (f"w={found[p]['width']}, {found[p]['epochs']} epochs, "
                           f"{found[p]['device']}" if p in found else "no run committed yet")
             for p in README_PROFILES]
    lines = ["| quantity | " + " | ".join(heads) + " | paper (Yang et al. 2023, w=64, GPU) |",
             "| --- |" + " --- |" * (len(heads) + 1)]
    for label, value in ROWS:
        cells = [value(found[p]) if p in found else "" for p in README_PROFILES]
        paper = f"{100 * PAPER_TEST_ACC:.0f}%" if label == PAPER_ROW else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {paper} |")
    sources = ", ".join(f"`figures/{p}/results.json`" for p in found) or "no results file yet"
    return "\n".join(lines) + f"\n\nSource: {sources}; rebuilt by `python -m nbutils readme`.\n"


def update_readme(readme: Path, figures_dir: Path) -> bool:
    """Rewrite the README's results section from the committed results; True if it changed."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} lacks the {README_START} / {README_END} markers")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{readme_table(figures_dir)}{README_END}{tail}"
    if new != text:
        atomic_write(readme, lambda p: p.write_text(new))
    return new != text
