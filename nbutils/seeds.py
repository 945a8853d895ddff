"""Spread over training seeds: one profile's runs, differing only in seed, summarised.

`summarise_seeds` flattens every accuracy and Neural Collapse number of each run's results.json
into dotted keys (`coarse.test_acc`, `recovery.test_acc_pred_coarse`, `nc.coarse.nc1`,
`controls.random_init.test_acc_true_coarse`, `ratio_to_baseline`, ...) and gives each its mean
and sample standard deviation over the seeds; `python -m nbutils seeds` writes the result to
`figures/<profile>/seeds.json`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nbutils.runs import load_json, save_json
from nbutils.stats import spread

# The blocks of results.json that hold accuracies and NC numbers; `ci95` intervals inside them
# are not quantities of their own.
QUANTITY_BLOCKS = ("coarse", "baseline", "recovery", "controls", "nc", "ratio_to_baseline")
SAME_RUN = ("profile", "mapping", "width", "epochs")
SD_NOTE = "sample standard deviation (ddof=1) over training seeds"


def _leaves(node: Any, prefix: str) -> Iterator[tuple[str, float | None]]:
    """(dotted key, number or None) of every number under node; list items by index."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "ci95":
                yield from _leaves(value, f"{prefix}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{prefix}.{i}")
    elif node is None or (isinstance(node, (int, float)) and not isinstance(node, bool)):
        yield prefix, None if node is None else float(node)


def flatten(res: dict[str, Any]) -> dict[str, float | None]:
    """Every accuracy and NC number of a results record by dotted key (None where missing)."""
    out: dict[str, float | None] = {}
    for block in QUANTITY_BLOCKS:
        # A run without a baseline has `"baseline": null`: no quantities, not one None.
        if res.get(block) is not None:
            out.update(_leaves(res[block], block))
    return out


def _check_same_runs(results: Sequence[dict[str, Any]]) -> None:
    """ValueError unless the records share SAME_RUN and have distinct seeds."""
    if not results:
        raise ValueError("results must hold at least one results record")
    first = {k: results[0][k] for k in SAME_RUN}
    for res in results[1:]:
        other = {k: res[k] for k in SAME_RUN}
        if other != first:
            raise ValueError(f"runs differ in more than the seed: {first} vs {other} "
                             f"(seed {results[0]['seed']} vs seed {res['seed']})")
    seeds = [res["seed"] for res in results]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"seed {repeated} appears in more than one run; give each seed once")


def summarise_seeds(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed quantities and their mean/sd over the seeds of runs that differ only in seed.

    A quantity missing (None or absent) in some runs is summarised over the runs that have it,
    its `n` saying how many; one missing in every run is left out of the summary.
    """
    _check_same_runs(results)
    ordered = sorted(results, key=lambda r: r["seed"])
    per_seed = {str(r["seed"]): flatten(r) for r in ordered}
    keys = dict.fromkeys(k for flat in per_seed.values() for k in flat)
    summary = {}
    for key in keys:
        values = [flat[key] for flat in per_seed.values() if flat.get(key) is not None]
        if values:
            summary[key] = spread(values)
    return {**{k: ordered[0][k] for k in SAME_RUN}, "seeds": [r["seed"] for r in ordered],
            "per_seed": per_seed, "summary": summary, "sd": SD_NOTE}


def seed_results(profile_dir: Path) -> list[dict[str, Any]]:
    """results.json of a published profile (seed 0) and of each `seeds/*/` beside it."""
    files = [profile_dir / "results.json", *sorted(profile_dir.glob("seeds/*/results.json"))]
    return [load_json(f) for f in files if f.is_file()]


def write_seeds(run_dirs: Sequence[Path], out: Path) -> dict[str, Any]:
    """Summarise the results.json of each run directory into the JSON file `out`."""
    summary = summarise_seeds([load_json(Path(d) / "results.json") for d in run_dirs])
    save_json(Path(out), summary)
    return summary
