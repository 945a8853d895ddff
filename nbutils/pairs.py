"""How separable a merged pair of fine classes is, with and without the merge (protocol, s. 11).

For each super-class of a run (a pair of fine classes under the CIFAR-10 mappings), k-means with
k = its number of fine classes on the images of those classes alone, with the recovery protocol
of docs/protocol.md section 4: the run's `feature_norm` (statistics from all the train features,
as the pipeline computes them), `n_init` and `seed`; clusters matched to the fine labels by the
Hungarian method on train; each test image labelled by the nearest train-fitted centroid, as in
variant (a). Measured in four feature spaces (SOURCES):

- `merged`: the coarse model at its last checkpoint, where the pair is one label; read from the
  run's results.json (`recovery.per_superclass_train` and `recovery.per_superclass`), which the
  same protocol produced;
- `baseline`: the fine-label baseline of the same run at its last checkpoint, where the two
  classes are separate labels (None when the run trained no baseline);
- `random_init`: the coarse model at epoch 0, untrained;
- `raw_pixels`: the images scaled to [0, 1] and centred per channel with the train means
  (`recovery.raw_pixel_features`, as the pipeline's raw-pixel control).

`run_pairs` writes them to `<run_dir>/pairs.json` once per run (`of_point` as soon as a sweep
point finishes, so the sweep's archive keeps them); `pair_summary` spreads them over
seeds per (mapping, pair) and `correlations` sets the merged recovery beside each control across
pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from nbutils import checks
from nbutils.checks import FEATURE_NORMS
from nbutils.config import RunConfig
from nbutils.data import class_names, mapping_table
from nbutils.features import load_features
from nbutils.lock import run_lock
from nbutils.recovery import normalize_features, raw_pixel_features, recover_fine_labels
from nbutils.run_data import load_run_data
from nbutils.runs import ArtifactError, load_json, load_run, save_json
from nbutils.stats import spread, t_interval
from nbutils.sweeps import comparable, finished

PAIRS_FILE = "pairs.json"
SOURCES = {
    "merged": "coarse model (pair merged)",
    "baseline": "fine-label baseline (pair not merged)",
    "random_init": "random-init network",
    "raw_pixels": "raw pixels",
}
CONTROLS = ("baseline", "random_init", "raw_pixels")
SPLITS = ("train", "test")


def _check_groups(groups: Sequence[Sequence[int]], n_fine: int) -> list[np.ndarray]:
    """Each group as a sorted int64 array of >= 2 distinct fine labels in 0..n_fine-1."""
    if not isinstance(groups, (list, tuple)) or not groups:
        raise ValueError(f"groups: must be a non-empty list of fine-label lists, got {groups!r}")
    out = []
    for group in groups:
        g = np.asarray(group)
        if (g.ndim != 1 or not np.issubdtype(g.dtype, np.integer) or len(np.unique(g)) != len(g)
                or len(g) < 2 or g.min() < 0 or g.max() >= n_fine):
            raise ValueError(f"groups: each must hold at least 2 distinct fine labels in "
                             f"0..{n_fine - 1}, got {list(group)!r}")
        out.append(np.sort(g).astype(np.int64))
    return out


def _pair_accuracy(
    train_x: np.ndarray, train_fine: np.ndarray, test_x: np.ndarray, test_fine: np.ndarray,
    group: np.ndarray, n_init: int, seed: int,
) -> dict[str, float]:
    """Train clustering and test (a) accuracy of k-means on one group's already-normalised rows."""
    tr = np.flatnonzero(np.isin(train_fine, group))
    te = np.flatnonzero(np.isin(test_fine, group))
    if len(te) == 0:
        raise ValueError(f"test_fine: has no image of the fine classes {group.tolist()}")
    # The group becomes one super-class whose fine labels are 0..k-1: the pipeline's own
    # recovery then runs on it unchanged (same k-means, matching and nearest centroid).
    metrics = recover_fine_labels(
        train_x[tr], np.searchsorted(group, train_fine[tr]), test_x[te],
        np.searchsorted(group, test_fine[te]), np.zeros(len(group), dtype=np.int64),
        n_init=n_init, seed=seed, feature_norm="none", probe=False,
    ).metrics
    return {"train": metrics["train_cluster_acc"], "test": metrics["test_acc_true_coarse"]}


def separability(
    train_features: np.ndarray, train_fine: np.ndarray, test_features: np.ndarray,
    test_fine: np.ndarray, groups: Sequence[Sequence[int]], n_init: int = 10, seed: int = 0,
    feature_norm: str = "none",
) -> list[dict[str, float]]:
    """k-means accuracy ({'train', 'test'}) of each group of fine classes, on its images alone.

    Features are normalised once over all the rows given (train statistics, as the pipeline
    does before clustering a super-class), then each group is clustered with k = its size.
    """
    checks.choice("feature_norm", feature_norm, FEATURE_NORMS)
    n_init = checks.integer("n_init", n_init, least=1)
    seed = checks.integer("seed", seed, least=0)
    train_fine, test_fine = np.asarray(train_fine), np.asarray(test_fine)
    for name, y in (("train_fine", train_fine), ("test_fine", test_fine)):
        if y.ndim != 1 or len(y) == 0 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{name}: must be a non-empty 1-D int array, got {y.dtype} {y.shape}")
    n_fine = int(max(train_fine.max(), test_fine.max())) + 1
    groups = _check_groups(groups, n_fine)
    train_x, test_x = normalize_features(train_features, test_features, feature_norm)
    return [_pair_accuracy(train_x, train_fine, test_x, test_fine, g, n_init, seed)
            for g in groups]


def pair_separability(
    train_features: np.ndarray, train_fine: np.ndarray, test_features: np.ndarray,
    test_fine: np.ndarray, pair: Sequence[int], n_init: int = 10, seed: int = 0,
    feature_norm: str = "none",
) -> dict[str, float]:
    """k-means (k=2) accuracy of one pair of fine classes on train and on test (variant (a))."""
    if len(pair) != 2:
        raise ValueError(f"pair: must be two fine labels, got {pair!r}")
    return separability(train_features, train_fine, test_features, test_fine, [pair], n_init,
                        seed, feature_norm)[0]


def group_names(fine_to_coarse: np.ndarray, dataset: str = "cifar10") -> list[str]:
    """'cat/dog' style names of the super-classes, as summaries.pair_names gives them."""
    names = class_names(dataset, len(fine_to_coarse))
    return ["/".join(n) for n in mapping_table(np.asarray(fine_to_coarse), names).values()]


def _of_features(cfg: RunConfig, feats: dict[str, np.ndarray],
                 groups: list[np.ndarray]) -> list[dict[str, float]]:
    """separability of every group in one checkpoint's features, with the run's protocol."""
    return separability(feats["train_features"], feats["train_fine"], feats["test_features"],
                        feats["test_fine"], groups, cfg.n_init, cfg.seed, cfg.feature_norm)


def _raw_pixels(cfg: RunConfig, groups: list[np.ndarray]) -> list[dict[str, float]]:
    """separability of every group in raw pixels, test centred with the train channel means."""
    data = load_run_data(cfg)
    train = raw_pixel_features(data.train.images)
    test = raw_pixel_features(data.test.images, reference=data.train.images)
    return separability(train, data.train.labels, test, data.test.labels, groups, cfg.n_init,
                        cfg.seed, cfg.feature_norm)


def _merged(res: dict[str, Any], n_groups: int) -> list[dict[str, float | None]]:
    """Each super-class's recovery in the coarse model, as results.json holds it."""
    rec = res["recovery"]
    train, test = rec.get("per_superclass_train"), rec.get("per_superclass")
    if train is None or test is None or len(train) != n_groups or len(test) != n_groups:
        raise ArtifactError(f"results.json of {res['config']['run_dir']}: recovery lacks "
                            f"per_superclass_train / per_superclass for {n_groups} super-classes; "
                            "re-run the recovery stage (python -m nbutils analyze)")
    return [{"train": a, "test": b} for a, b in zip(train, test, strict=True)]


def compute_pairs(cfg: RunConfig) -> dict[str, Any]:
    """Every super-class's separability in the merged model and the three controls."""
    res = finished(cfg)
    if res is None:
        raise ArtifactError(f"{cfg.run_dir}: no results.json made with this configuration; "
                            "run the pipeline (python -m nbutils analyze) first")
    last = load_features(cfg, "coarse", cfg.epochs)
    f2c = last["fine_to_coarse"]
    groups = [np.flatnonzero(f2c == s) for s in range(int(f2c.max()) + 1)]
    base = (_of_features(cfg, load_features(cfg, "baseline", cfg.epochs), groups)
            if "baseline" in cfg.models else [None] * len(groups))
    per_source = {"merged": _merged(res, len(groups)), "baseline": base,
                  "random_init": _of_features(cfg, load_features(cfg, "coarse", 0), groups),
                  "raw_pixels": _raw_pixels(cfg, groups)}
    names = group_names(f2c, cfg.dataset)
    rows = [{"pair": names[s], "classes": g.tolist(), "superclass": s,
             **{src: vals[s] for src, vals in per_source.items()}}
            for s, g in enumerate(groups)]
    return {"config": cfg.to_dict(), "mapping": str(cfg.mapping), "seed": cfg.seed,
            "epoch": cfg.epochs, "feature_norm": cfg.feature_norm, "n_init": cfg.n_init,
            "sources": SOURCES, "pairs": rows}


def run_pairs(run_dir: str | Path, data_root: str | None = None,
              overwrite: bool = False) -> dict[str, Any]:
    """compute_pairs of a finished run, kept in <run_dir>/pairs.json and read back from it.

    A pairs.json made with the same training and analysis configuration is returned as it is.
    """
    checks.flag("overwrite", overwrite)
    cfg = load_run(run_dir, data_root=data_root)
    path = Path(cfg.run_dir) / PAIRS_FILE
    if path.is_file() and not overwrite:
        done = load_json(path)
        if comparable(done.get("config", {})) == comparable(cfg.to_dict()):
            return done
    with run_lock(cfg.run_dir):
        out = compute_pairs(cfg)
        save_json(path, out)
    return out


def of_point(cfg: RunConfig) -> dict[str, Any]:
    """run_pairs of a finished sweep point (the `then` of sweeps.run_sweep)."""
    return run_pairs(cfg.run_dir, data_root=cfg.data_root)


def pair_summary(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (mapping, pair), in first-seen order: its seeds and, for every source and split, the
    mean, sample sd (ddof=1), min, max and n over seeds (stats.spread); a source no run of the
    pair measured (a run without baseline) is None."""
    if not isinstance(records, (list, tuple)) or not records:
        raise ValueError("records: must be a non-empty list of run_pairs results")
    cells: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for rec in records:
        for row in rec["pairs"]:
            cells.setdefault((rec["mapping"], row["pair"]), []).append((rec["seed"], row))
    out = []
    for (mapping, pair), entries in cells.items():
        rows = [r for _, r in entries]
        out.append({"mapping": mapping, "pair": pair, "classes": rows[0]["classes"],
                    "seeds": [s for s, _ in entries],
                    **{src: _spread_source(rows, src) for src in SOURCES}})
    return out


def pairs_file(folder: Path) -> Path | None:
    """The pairs.json of a run directory, or of a published profile folder (under logs/)."""
    for path in (folder / PAIRS_FILE, folder / "logs" / PAIRS_FILE):
        if path.is_file():
            return path
    return None


def seeds_record(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """pair_summary over seeds, and per pair the paired test difference merged - baseline
    (each seed's coarse model against its own baseline) with its Student-t 95% interval."""
    rows = pair_summary(records)
    by_seed = {rec["seed"]: {r["pair"]: r for r in rec["pairs"]} for rec in records}
    for row in rows:
        diffs = [by_seed[s][row["pair"]]["merged"]["test"]
                 - by_seed[s][row["pair"]]["baseline"]["test"]
                 for s in row["seeds"] if by_seed[s][row["pair"]].get("baseline")]
        row["merged_minus_baseline_test"] = (
            {**spread(diffs), "t95": t_interval(diffs)} if diffs else None)
    return {"seeds": sorted(by_seed), "feature_norm": records[0]["feature_norm"],
            "n_init": records[0]["n_init"], "sources": records[0]["sources"],
            "interval": "Student-t 95% over seeds, sd ddof=1", "pairs": rows}


def _spread_source(rows: list[dict[str, Any]], source: str) -> dict[str, Any] | None:
    """spread over seeds of one source's train and test accuracies; None when never measured."""
    measured = [r[source] for r in rows if r.get(source) is not None]
    if not measured:
        return None
    return {split: spread([math.nan if m[split] is None else m[split] for m in measured])
            for split in SPLITS}


def source_mean(row: dict[str, Any], source: str, split: str) -> float:
    """Mean over seeds of one source and split of a pair_summary row; NaN when absent."""
    cell = row.get(source)
    return math.nan if cell is None else cell[split]["mean"]


def correlations(rows: Sequence[dict[str, Any]], split: str = "test",
                 target: str = "merged") -> dict[str, dict[str, Any]]:
    """Across pair_summary rows: how the target's mean follows each other source's mean.

    Per source: the number of (mapping, pair) rows with both means, Pearson r, Spearman rho and
    the least-squares line target = slope * source + intercept (None below 3 rows or for a
    constant series). Rows are not independent (a pair recurs across mappings and shares its
    images), so no p-value is given.
    """
    checks.choice("split", split, SPLITS)
    checks.choice("target", target, tuple(SOURCES))
    out = {}
    for source in (s for s in SOURCES if s != target):
        xy = np.asarray([(source_mean(r, source, split), source_mean(r, target, split))
                         for r in rows], dtype=np.float64).reshape(-1, 2)
        xy = xy[np.isfinite(xy).all(axis=1)]
        out[source] = _fit(xy[:, 0], xy[:, 1])
    return out


def _fit(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """n, Pearson r, Spearman rho, slope and intercept of y on x (None where undefined)."""
    empty = {"n_pairs": len(x), "pearson": None, "spearman": None, "slope": None,
             "intercept": None}
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return empty
    slope, intercept = np.polyfit(x, y, 1)
    return {"n_pairs": len(x), "pearson": float(scipy.stats.pearsonr(x, y)[0]),
            "spearman": float(scipy.stats.spearmanr(x, y)[0]), "slope": float(slope),
            "intercept": float(intercept)}
