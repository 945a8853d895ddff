"""results.json (`docs/protocol.md` section 10), its intervals and markdown tables."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from nbutils.analysis import load_history
from nbutils.config import RunConfig, steps_per_epoch
from nbutils.metrics import Classes, interval_key, label, number, run_classes, value, write
from nbutils.phase import clean_train_curve, terminal_phase_of
from nbutils.report import lookup
from nbutils.runs import (
    atomic_write,
    load_json,
    load_timings,
    model_dir,
    save_json,
    versions,
)
from nbutils.seeds import flatten, seed_results
from nbutils.stats import bootstrap_count_ci, count_of, t_interval

PAPER_TEST_ACC = 0.93
NC_KEYS = ("nc1", "nc1_unnormalised", "nc2_equinorm", "nc2_equiangular", "nc2_etf_distance",
           "nc3", "nc4")
N_BOOT, CI_SEED = 1000, 0
CI95_METHOD = (f"percentile bootstrap over images, {N_BOOT} resamples, seed {CI_SEED}; test-set "
               "sampling only (train-set for train accuracies), with the k-means clusters fixed "
               "(not refit per resample), not seed-to-seed spread")
_TRAIN, _TEST = "train_size", "test_size"
# (accuracy's metric key, the results key of the number of images it averages over)
CI_KEYS: tuple[tuple[str, str], ...] = (
    ("coarse.train_acc", _TRAIN), ("coarse.test_acc", _TEST),
    ("baseline.train_acc", _TRAIN), ("baseline.test_acc", _TEST),
    ("recovery.train_cluster_acc", _TRAIN), ("recovery.test_acc_true_coarse", _TEST),
    ("recovery.test_acc_pred_coarse", _TEST), ("recovery.test_cluster_acc_true_coarse", _TEST),
    ("recovery.test_cluster_acc_pred_coarse", _TEST), ("recovery.linear_probe_test_acc", _TEST),
    ("controls.random_init.test_acc_true_coarse", _TEST),
    ("controls.raw_pixels.test_acc_true_coarse", _TEST),
)
# Recovery metrics added after some runs were published, and what each is.
LATER_METRICS = {
    "test_cluster_acc_true_coarse": "variant (c), k-means on the test features of each true "
                                    "super-class",
    "test_cluster_acc_pred_coarse": "variant (d), k-means on the test features of each "
                                    "predicted super-class",
    "nmi_within_superclass": "NMI of the train clustering within each super-class",
}


def _final(cfg: RunConfig, model: str) -> dict[str, Any]:
    """The collapse.json entry of `model`'s last checkpoint."""
    return load_json(model_dir(cfg, model) / "collapse.json")[-1]


def _train_seconds(cfg: RunConfig, model: str) -> float:
    """Sum of the epoch times in `model`'s training log."""
    return float(sum(row["seconds"] for row in load_json(model_dir(cfg, model) / "log.json")))


def build_results(cfg: RunConfig) -> dict[str, Any]:
    """The results record of a run whose stages 01-04 have finished, with its intervals."""
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
        # Absent (None) for runs trained before it was recorded.
        "environment": meta.get("environment"),
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
    if cfg.clean_train_eval:
        logs = {m: load_json(model_dir(cfg, m) / "log.json") for m in cfg.models}
        out["clean_train"] = {m: clean_train_curve(log) for m, log in logs.items()}
        out["wall_seconds"]["clean_train_eval"] = {
            m: sum(row.get("clean_eval_seconds", 0.0) for row in log) for m, log in logs.items()}
    out["terminal_phase"] = terminal_phase_record(out)
    if has_baseline and cfg.clean_train_eval:
        out["terminal_phase_baseline"] = terminal_phase_record(out, "baseline")
    return with_intervals(out)


def terminal_phase_record(res: dict[str, Any], model: str = "coarse") -> dict[str, Any]:
    """Whether and from when `model` is in the terminal phase, by epoch and by optimiser step."""
    found = terminal_phase_of(res, model=model)
    per_epoch = steps_per_epoch(res["config"])
    onset = found["onset_epoch"]
    return {**found, "onset_step": None if onset is None else onset * per_epoch}


def with_intervals(res: dict[str, Any]) -> dict[str, Any]:
    """A copy of a results record with `ci95` intervals beside each accuracy of CI_KEYS.

    Each interval is the percentile bootstrap of the accuracy over the images it averages
    (nbutils.stats: it needs only the count, recovered from the accuracy and the set size), so
    it is the same whether computed at analysis time or later from a published file. A missing
    or None accuracy gets no interval; an existing `ci95` entry is replaced in place.
    """
    out = copy.deepcopy(res)
    blocks: dict[str, dict[str, list[float]]] = {}
    for key, size in CI_KEYS:
        acc = value(out, key)
        if not math.isnan(acc):
            block, _, leaf = key.rpartition(".")
            n = out[size]
            blocks.setdefault(block, {})[leaf] = list(
                bootstrap_count_ci(count_of(acc, n), n, N_BOOT, CI_SEED))
    for block, ci in blocks.items():
        lookup(out, block)["ci95"] = ci
    out["ci95_method"] = CI95_METHOD
    return out


def not_recomputed(res: dict[str, Any]) -> dict[str, str]:
    """Why each metric of LATER_METRICS that a published record lacks cannot be added to it."""
    missing = [k for k in LATER_METRICS if k not in res["recovery"]]
    why = (f"added to the analysis after this run, and computing it needs the run's "
           f"penultimate-layer features (coarse model, epoch {res['epochs']}), which were not "
           f"published (only JSON logs and compact.npz); re-running the `{res['profile']}` "
           f"profile (training, then `python -m nbutils analyze`) computes it")
    return {f"recovery.{k}": f"{LATER_METRICS[k]}: {why}" for k in missing}


def add_published_intervals(path: Path) -> dict[str, Any]:
    """Add the ci95 entries, and `not_recomputed`, to a published results.json in place.

    Everything else keeps its content and key order; new keys go at the end of their block.
    """
    res = with_intervals(load_json(path))
    missing = not_recomputed(res)
    if missing:
        res["not_recomputed"] = missing
    save_json(path, res)
    return res


def _wall(res: dict[str, Any]) -> str:
    """Training wall time of both models, in minutes (of the published run, never averaged)."""
    w = res["wall_seconds"]
    return f"{(w['train'] + (w['baseline'] or 0)) / 60:.1f} min"


def _interval(res: dict[str, Any], key: str) -> str:
    """' [low, high]' of metric `key` from the record's ci95 entry; '' when it has none."""
    low, high = (value(res, f"{interval_key(key)}.{i}") for i in (0, 1))
    if math.isnan(low) or math.isnan(high):
        return ""
    return f" [{number(key, low)}, {number(key, high)}]"


def _fewer(seeds: dict[str, Any], stat: dict[str, Any]) -> str:
    """' (n=k)' when a quantity rests on fewer seeds than the summary holds, else ''."""
    return f" (n={stat['n']})" if stat["n"] < len(seeds["seeds"]) else ""


def _seed_spread(stat: dict[str, Any], key: str) -> str:
    """' ± sd [t-interval over seeds]' of a seeds summary entry; '' for a quantity that does
    not vary over seeds (a deterministic control such as raw pixels) or has one seed."""
    if stat["n"] < 2 or stat["sd"] == 0:
        return ""
    ci = t_interval(stat["values"])
    interval = "" if ci is None else f" [{number(key, ci[0])}, {number(key, ci[1])}]"
    return f" ± {number(key, stat['sd'])}{interval}"


def _cell(key: str, res: dict[str, Any], seeds: dict[str, Any] | None) -> str:
    """Metric `key` of a run with its interval, or its mean ± sd over seeds; '-' when missing."""
    if seeds is None:
        x = value(res, key)
        return "-" if math.isnan(x) else write(key, x) + _interval(res, key)
    stat = seeds["summary"].get(key)
    if stat is None:
        return "-"
    return write(key, stat["mean"]) + _seed_spread(stat, key) + _fewer(seeds, stat)


# The rows of the results tables: the metrics of each (several joined by ' / ').
ROWS: tuple[tuple[str, ...], ...] = (
    ("coarse.test_acc",), ("coarse.train_acc",), ("recovery.train_cluster_acc",),
    ("recovery.test_acc_true_coarse",), ("recovery.test_acc_pred_coarse",),
    ("recovery.test_cluster_acc_true_coarse",), ("recovery.test_cluster_acc_pred_coarse",),
    ("baseline.test_acc",), ("ratio_to_baseline",), ("recovery.linear_probe_test_acc",),
    ("recovery.nmi", "recovery.ari"), ("recovery.nmi_within_superclass",),
    ("controls.random_init.test_acc_true_coarse",), ("controls.raw_pixels.test_acc_true_coarse",),
    ("nc.coarse.nc1", "nc.fine.nc1"),
)
WALL_ROW = "training wall time (coarse + baseline)"
# The comparison the paper makes, in bold: recovery (b) against the fine-label baseline.
PAPER_KEY = "recovery.test_acc_pred_coarse"
EMPHASISED = (PAPER_KEY, "baseline.test_acc")
README_PROFILES = ("cpu", "full", "paper")
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def row_label(keys: tuple[str, ...], *runs: Classes) -> str:
    """A row's quantity: its metrics' labels, in bold for the paper's comparison."""
    text = " / ".join(label(k, *runs) for k in keys)
    return f"**{text}**" if keys[0] in EMPHASISED else text


def table_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    """(quantity, value) rows of the key numbers of one results.json, with their intervals."""
    run = run_classes(res)
    rows = [(row_label(keys, run), " / ".join(_cell(k, res, None) for k in keys))
            for keys in ROWS]
    return [*rows, (WALL_ROW, _wall(res))]


def table_title(res: dict[str, Any]) -> str:
    """One line saying which run a table describes."""
    return (f"profile {res['profile']}, mapping {res['mapping']}, width {res['width']}, "
            f"{res['epochs']} epochs, seed {res['seed']}, {res['device']}")


def _interval_note(res: dict[str, Any]) -> str:
    """What the [..] intervals of a record are, or '' when it has none."""
    method = res.get("ci95_method")
    return "" if method is None else f"[..]: 95% interval, {method}."


def markdown_table(res: dict[str, Any]) -> str:
    """The key numbers of one results.json as a markdown table."""
    head = table_title(res) + "\n\n"
    lines = ["| quantity | value |", "| --- | --- |"]
    lines += [f"| {q} | {v} |" for q, v in table_rows(res)]
    lines.append(f"| paper's figure (ResNet-18 w=64, GPU), (b) | {100 * PAPER_TEST_ACC:.0f}% |")
    note = _interval_note(res)
    return head + "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")


def write_results(cfg: RunConfig) -> dict[str, Any]:
    """Build results.json and results.md in the run directory; returns the record."""
    res = build_results(cfg)
    root = Path(cfg.run_dir)
    save_json(root / "results.json", res)
    atomic_write(root / "results.md", lambda p: p.write_text(markdown_table(res)))
    return res


class StaleSeeds(ValueError):
    """A profile's seeds.json no longer summarises its published results.json."""


def _load_seeds(folder: Path, res: dict[str, Any]) -> dict[str, Any] | None:
    """figures/<profile>/seeds.json if present; StaleSeeds if it is not of res's runs."""
    path = folder / "seeds.json"
    if not path.is_file():
        return None
    seeds = load_json(path)
    same = all(seeds.get(k) == res[k] for k in ("profile", "mapping", "width", "epochs"))
    if not same or seeds["per_seed"].get(str(res["seed"])) != flatten(res):
        raise StaleSeeds(f"{path} does not summarise the run of {folder / 'results.json'} "
                         f"(profile, mapping, width, epochs, or the numbers of its seed "
                         f"{res['seed']} differ); rebuild it with `python -m nbutils seeds`")
    return seeds


def _column_head(profile: str, res: dict[str, Any] | None, seeds: dict[str, Any] | None) -> str:
    """The README column head of one profile, with whether its runs hold the terminal phase."""
    if res is None:
        return f"`{profile}`: no run committed yet"
    augment = "" if res["config"].get("augment", True) else ", no augmentation"
    if seeds is None:
        return (f"`{profile}`: w={res['width']}, {res['epochs']} epochs{augment}, "
                f"{res['device']}, {_phase_words(res)}")
    return (f"`{profile}`: w={res['width']}, {res['epochs']} epochs{augment}, "
            f"{len(seeds['seeds'])} seeds, mean ± sd, {seeds['in_phase']} of "
            f"{len(seeds['seeds'])} in the terminal phase")


def _phase_words(res: dict[str, Any]) -> str:
    """'in the terminal phase from epoch N' or 'before the terminal phase' for one run."""
    found = res.get("terminal_phase")
    if not found or not found["reached"]:
        return "before the terminal phase"
    return (f"in the terminal phase from epoch {found['onset_epoch']} "
            f"({100 * found['held_fraction']:.0f}% of training)")


def _footnotes(found: dict[str, dict], seeds: dict[str, dict | None]) -> list[str]:
    """The lines under the README table: intervals, seed spreads, numbers not recomputed."""
    notes = []
    methods = {res["ci95_method"] for p, res in found.items()
               if "ci95_method" in res and seeds.get(p) is None}
    if methods:
        notes.append(f"[..] beside a single run: 95% interval, {' / '.join(sorted(methods))}.")
    notes.append("Training wall time: the sum of the epoch times of both models, so it also "
                 "counts any other work that shared the machine; not a speed benchmark.")
    for p, s in seeds.items():
        if s is None:
            continue
        listed = ", ".join(str(x) for x in s["seeds"])
        notes.append(
            f"`{p}`: mean ± sample standard deviation (ddof=1, in percentage points for "
            f"accuracies) over the {len(s['seeds'])} training seeds {listed}, and in [..] the "
            f"Student-t 95% interval of the mean over those seeds (the spread over training "
            f"seeds, not over images); no spread where every seed gives the same value (raw "
            f"pixels do not depend on the training seed); (n=k) where a quantity rests on fewer "
            f"seeds (measured only by later runs). The wall time is the seed-{found[p]['seed']} "
            f"run's alone (`figures/{p}/results.json`).")
    for p, res in found.items():
        if "ci95_method" not in res:
            notes.append(f"`{p}`: no [..] intervals; its results.json predates them "
                         f"(`python -m nbutils intervals` adds them).")
        notes += _missing_note(p, res.get("not_recomputed") or not_recomputed(res))
    return notes


def _missing_note(profile: str, missing: dict[str, str]) -> list[str]:
    """The footnote on a profile's numbers shown as - because they were not recomputed."""
    if not missing:
        return []
    keys = ", ".join(f"`{k}`" for k in missing)
    whys = {text.split(": ", 1)[-1] for text in missing.values()}
    if len(whys) == 1:
        return [f"`{profile}`: - where a value was not recomputed: {keys}. Each was "
                f"{whys.pop()}."]
    return [f"`{profile}`: `{k}` is shown as - (not recomputed): {text}." for k, text in
            missing.items()]


def readme_table(figures_dir: Path) -> str:
    """Markdown table of the published profiles' results beside the paper's figure."""
    found = {p: load_json(figures_dir / p / "results.json") for p in README_PROFILES
             if (figures_dir / p / "results.json").is_file()}
    seeds = {p: _load_seeds(figures_dir / p, res) for p, res in found.items()}
    for p, summary in seeds.items():
        if summary is not None:
            summary["in_phase"] = sum(value(res, "terminal_phase.reached") == 1.0
                                      for res in seed_results(figures_dir / p))
    heads = [_column_head(p, found.get(p), seeds.get(p)) for p in README_PROFILES]
    lines = ["| quantity | " + " | ".join(heads) + " | paper (Yang et al. 2023, w=64, GPU) |",
             "| --- |" + " --- |" * (len(heads) + 1)]
    runs = [run_classes(res) for res in found.values()]
    rows = [(row_label(keys, *runs),
             [" / ".join(_cell(k, found[p], seeds[p]) for k in keys) if p in found else ""
              for p in README_PROFILES],
             f"{100 * PAPER_TEST_ACC:.0f}%" if keys == (PAPER_KEY,) else "") for keys in ROWS]
    rows.append((WALL_ROW, [_wall(found[p]) if p in found else "" for p in README_PROFILES], ""))
    lines += [f"| {name} | " + " | ".join(cells) + f" | {paper} |" for name, cells, paper in rows]
    notes = "".join(f"\n{n}\n" for n in _footnotes(found, seeds))
    used = [f"`figures/{p}/results.json`" for p in found]
    used += [f"`figures/{p}/seeds.json`" for p in found if seeds[p] is not None]
    sources = ", ".join(used) or "no results file yet"
    return ("\n".join(lines) + "\n" + notes
            + f"\nSource: {sources}; rebuilt by `python -m nbutils readme`.\n")


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
