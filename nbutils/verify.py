"""Recompute every headline number the repository can from its own committed small files.

`python -m nbutils verify` checks, without features, checkpoints or data:
- recovery (a) and (b) of every published run against the recovered test labels in its
  `compact.npz`;
- every `seeds.json` against the per-seed `results.json` files published beside it, and the
  over-seeds files beside it (`phase_change.json`, `pairs_seeds.json`) against a rebuild from
  the per-seed files they summarise;
- every recorded terminal-phase flag against the accuracy curve it was read from;
- `runs.csv` and the README's results table against a fresh rebuild from the results files.
Each check returns the mismatches it found as sentences naming the file; none means it agrees.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nbutils.pairs import pairs_file, seeds_record
from nbutils.paths import FIGURES_DIR, REPO
from nbutils.results import (
    README_END,
    README_START,
    StaleSeeds,
    readme_table,
    terminal_phase_record,
)
from nbutils.run_index import SEED_PROFILES, build_index
from nbutils.runs import load_json, load_npz
from nbutils.seeds import seed_results, summarise_seeds
from nbutils.summaries import onset_to_end

# Stored and recomputed numbers agree to float64 round-off: both come from the same arithmetic.
TOLERANCE = 1e-9
# compact.npz key -> the results.json recovery key it reproduces.
COMPACT_VARIANTS = {"test_pred_true_coarse": "test_acc_true_coarse",
                    "test_pred_pred_coarse": "test_acc_pred_coarse"}
PHASE_KEYS = ("reached", "onset_epoch", "held_fraction")


def _differs(stored: Any, recomputed: Any) -> bool:
    """Whether two numbers (or None / bools / ints) disagree beyond TOLERANCE."""
    if isinstance(stored, (int, float)) and isinstance(recomputed, (int, float)):
        both_nan = math.isnan(stored) and math.isnan(recomputed)
        return not both_nan and abs(stored - recomputed) > TOLERANCE
    return stored != recomputed


def _rel(path: Path) -> str:
    """`path` from the repository root when it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def published_runs(figures: Path) -> list[Path]:
    """Folders of published runs: figures/<profile>/, their seeds/<seed>/ and axis/<seed>/."""
    return sorted(p.parent for p in Path(figures).glob("*/results.json")) + sorted(
        p.parent for sub in ("seeds", "axis")
        for p in Path(figures).glob(f"*/{sub}/*/results.json"))


def check_compact(run: Path) -> list[str]:
    """Recovery (a) and (b) of a published run recomputed from its compact.npz."""
    compact = run / "logs" / "compact.npz"
    if not compact.is_file():
        return []
    arrays, res = load_npz(compact), load_json(run / "results.json")
    out = []
    for key, metric in COMPACT_VARIANTS.items():
        recomputed = float(np.mean(arrays[key] == arrays["test_fine"]))
        if _differs(res["recovery"][metric], recomputed):
            out.append(f"{_rel(run / 'results.json')}: recovery.{metric} is "
                       f"{res['recovery'][metric]!r}, {_rel(compact)} gives {recomputed!r}")
    return out


def check_seeds(profile: Path) -> list[str]:
    """A profile's seeds.json against a summary rebuilt from its per-seed results files."""
    path = profile / "seeds.json"
    if not path.is_file():
        return []
    stored, rebuilt = load_json(path), summarise_seeds(seed_results(profile))
    if stored["seeds"] != rebuilt["seeds"]:
        return [f"{_rel(path)}: seeds {stored['seeds']}, the published results hold "
                f"{rebuilt['seeds']}"]
    out = []
    for key in sorted(set(stored["summary"]) | set(rebuilt["summary"])):
        old, new = stored["summary"].get(key), rebuilt["summary"].get(key)
        if old is None or new is None:
            out.append(f"{_rel(path)}: {key} is only in the "
                       f"{'rebuilt' if old is None else 'stored'} summary")
            continue
        for stat in ("mean", "sd", "n"):
            if _differs(old[stat], new[stat]):
                out.append(f"{_rel(path)}: {key}.{stat} is {old[stat]!r}, the per-seed "
                           f"results give {new[stat]!r}")
    return out


def _leaf_differences(stored: Any, rebuilt: Any, where: str = "") -> list[str]:
    """Dotted paths at which two JSON trees differ (numbers beyond TOLERANCE)."""
    if isinstance(stored, dict) and isinstance(rebuilt, dict):
        return [d for k in sorted(set(stored) | set(rebuilt), key=str)
                for d in (_leaf_differences(stored[k], rebuilt[k], f"{where}{k}.")
                          if k in stored and k in rebuilt else [f"{where}{k}"])]
    if isinstance(stored, list) and isinstance(rebuilt, list) and len(stored) == len(rebuilt):
        return [d for i, (a, b) in enumerate(zip(stored, rebuilt, strict=True))
                for d in _leaf_differences(a, b, f"{where}{i}.")]
    return [where.rstrip(".")] if _differs(stored, rebuilt) else []


def over_seeds_records(run_dirs: list[Path]) -> dict[str, Any]:
    """The over-seeds files beside a seeds.json, by name, from the runs (or published folders)
    of its seeds: phase_change.json where every run logged its phase during training,
    pairs_seeds.json where every run has its pair counterfactuals."""
    out: dict[str, Any] = {}
    records = [load_json(Path(d) / "results.json") for d in run_dirs]
    if all(r.get("clean_train") for r in records):
        out["phase_change.json"] = onset_to_end(records)
    pairs = [pairs_file(Path(d)) for d in run_dirs]
    if all(pairs):
        out["pairs_seeds.json"] = seeds_record([load_json(f) for f in pairs])
    return out


def check_over_seeds(profile: Path) -> list[str]:
    """A profile's phase_change.json and pairs_seeds.json against a rebuild from its seeds."""
    runs = [profile, *sorted(p.parent for p in profile.glob("seeds/*/results.json"))]
    # Through JSON, as the stored files went: tuples become lists.
    rebuilt = json.loads(json.dumps(over_seeds_records(runs)))
    out = []
    for name in ("phase_change.json", "pairs_seeds.json"):
        path = profile / name
        if path.is_file():
            out += [f"{_rel(path)}: {where or 'the file'} differs from a rebuild from the "
                    f"per-seed files; `python -m nbutils seeds` rewrites it"
                    for where in _leaf_differences(load_json(path), rebuilt.get(name))]
    return out


def check_phase(path: Path) -> list[str]:
    """A results.json's terminal-phase records against the curves they were read from."""
    res = load_json(path)
    out = []
    for block, model in (("terminal_phase", "coarse"), ("terminal_phase_baseline", "baseline")):
        if block not in res or not (res.get("history") or res.get("clean_train")):
            continue
        rebuilt = terminal_phase_record(res, model)
        for key in PHASE_KEYS:
            if _differs(res[block].get(key), rebuilt[key]):
                out.append(f"{_rel(path)}: {block}.{key} is {res[block].get(key)!r}, its "
                           f"accuracy curve gives {rebuilt[key]!r}")
    return out


def check_runs_csv(figures: Path) -> list[str]:
    """runs.csv against a rebuild from the experiments' JSON and the published profiles' seeds."""
    path = figures / "experiments" / "runs.csv"
    if not path.is_file():
        return []
    profiles = {p: figures / p for p in SEED_PROFILES}
    rebuilt = build_index(figures / "experiments", profiles).to_csv(index=False)
    if rebuilt == path.read_text():
        return []
    old, new = path.read_text().splitlines(), rebuilt.splitlines()
    rows = [i for i in range(max(len(old), len(new)))
            if i >= len(old) or i >= len(new) or old[i] != new[i]]
    return [f"{_rel(path)}: {len(rows)} line(s) differ from a rebuild (first: line "
            f"{rows[0] + 1}); `python -m nbutils runs-index` rewrites it"]


def check_readme(readme: Path, figures: Path) -> list[str]:
    """The README's results table against one rendered from the results files now."""
    text = readme.read_text()
    shown = text.split(README_START, 1)[1].split(README_END, 1)[0]
    try:
        table = readme_table(figures)
    except StaleSeeds as err:
        return [f"{_rel(readme)}: its results table cannot be rebuilt ({err})"]
    if shown == f"\n{table}":
        return []
    return [f"{_rel(readme)}: its results table differs from the committed results files; "
            f"`python -m nbutils readme` rebuilds it"]


def verify(figures: Path = FIGURES_DIR, readme: Path = REPO / "README.md") -> dict[str, list[str]]:
    """Every check over the repository's committed files: check name -> mismatches."""
    figures = Path(figures)
    runs = published_runs(figures)
    results_files = sorted({*(r / "results.json" for r in runs),
                            *figures.glob("experiments/runs/*/*/results.json")})
    checks: dict[str, Callable[[], list[str]]] = {
        "recovery from compact.npz": lambda: [m for r in runs for m in check_compact(r)],
        "seeds.json": lambda: [m for p in sorted({r for r in runs if r.parent.name != "seeds"})
                               for m in check_seeds(p)],
        "over-seeds files": lambda: [m for p in sorted({r for r in runs
                                                        if r.parent.name != "seeds"})
                                     for m in check_over_seeds(p)],
        "terminal phase": lambda: [m for f in results_files for m in check_phase(f)],
        "runs.csv": lambda: check_runs_csv(figures),
        "README table": lambda: check_readme(Path(readme), figures),
    }
    return {name: check() for name, check in checks.items()}


def counts(figures: Path = FIGURES_DIR) -> dict[str, int]:
    """How many files each check reads, so that a pass over nothing is visible as such."""
    runs = published_runs(Path(figures))
    return {"published runs": len(runs),
            "with compact.npz": sum((r / "logs" / "compact.npz").is_file() for r in runs),
            "seeds.json": sum((r / "seeds.json").is_file() for r in runs),
            "archived experiment runs": len(list(
                Path(figures).glob("experiments/runs/*/*/results.json")))}
