"""What the dominant 2-means split of a super-class's test features follows.

Inside each true super-class, the 2-means split of the test features (recovery variant (c) of
`nbutils.recovery`: same normalisation, k, n_init and seed) is compared with candidate binary
splits: the fine label, correct vs wrong coarse prediction, the raw feature norm above vs below
the super-class median, and, among wrongly predicted images, the super-class they are confused
with. Agreement is the 2-class Hungarian accuracy (the better of the 2 matchings), so it is at
least 0.5 for any pair of splits; `chance` is what an independent split with the same marginals
reaches, the level to read it against. The share of the super-class's test variance along the
train-fitted fine axis is set against the share along its top principal axis (the largest any
direction holds). Phase-feature files (`nbutils.analysis.export_phase_features`) keep the test
features and the train fine-class means; the same two shares on the train features are computed
when the file is written (`train_shares`) and kept beside them, where the run's normalisation is
row-wise (files written before that hold the test side only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nbutils import checks
from nbutils.kmeans import kmeans
from nbutils.recovery import cluster_accuracy, normalize_features
from nbutils.runs import load_json, load_npz
from nbutils.stats import spread, t_interval

# Row-wise normalisations only: the phase files hold no train features, so the ones built on
# train statistics (center_l2, standardize) cannot be reproduced from them.
ROW_NORMS = ("none", "l2")
# Candidate splits whose agreement is also read against its independent level over seeds.
CANDIDATES = ("fine_label", "correct_vs_wrong", "norm_above_median", "confusion")
# Columns of a phase file's train_variance_share_<epoch> array (one row per super-class).
SHARE_COLUMNS = ("fine_axis", "top_axis", "cos_fine_top")


def normalise_rows(x: np.ndarray, feature_norm: str) -> np.ndarray:
    """x in float64, normalised row by row as `recovery.normalize_features` does."""
    checks.choice("feature_norm", feature_norm, ROW_NORMS)
    x = np.asarray(x, dtype=np.float64)
    return normalize_features(x, x, feature_norm)[1]


def two_means(x: np.ndarray, n_init: int, seed: int) -> np.ndarray:
    """Labels (0/1) of the 2-means split of x, as recovery variant (c) runs it."""
    return kmeans(x, 2, n_init, seed)[0]


def chance_agreement(split: np.ndarray, labels: np.ndarray) -> float:
    """Expected agreement of independent binary splits with these marginals (always >= 0.5)."""
    p, q = float(np.mean(split == 1)), float(np.mean(labels))
    same = p * q + (1 - p) * (1 - q)
    return max(same, 1 - same)


def compare(split: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Agreement (2-class Hungarian accuracy) of a 0/1 split with boolean labels, and its chance."""
    return {"agreement": cluster_accuracy(labels, split),
            "chance": chance_agreement(split, labels)}


def confusion(split: np.ndarray, pred: np.ndarray, superclass: int) -> dict[str, Any] | None:
    """Among wrongly predicted images: the split against 'predicted = most common wrong class'.

    None when fewer than 2 images are wrong.
    """
    wrong = pred != superclass
    if wrong.sum() < 2:
        return None
    top = int(np.bincount(pred[wrong]).argmax())
    labels = pred[wrong] == top
    return {"confused_with": top, "n_wrong": int(wrong.sum()),
            "confused_share": float(labels.mean()), **compare(split[wrong], labels)}


def split_agreements(
    x: np.ndarray, norms: np.ndarray, second_fine: np.ndarray, pred: np.ndarray,
    superclass: int, n_init: int, seed: int,
) -> dict[str, Any]:
    """The 2-means split of one super-class's normalised test features against each candidate."""
    split = two_means(x, n_init, seed)
    wrong = pred != superclass
    return {
        "n": len(x),
        "cluster_sizes": np.bincount(split, minlength=2).tolist(),
        "fine_label": compare(split, second_fine),
        "correct_vs_wrong": compare(split, wrong),
        "wrong_share_per_cluster": [float(wrong[split == j].mean()) for j in (0, 1)],
        "norm_above_median": compare(split, norms > np.median(norms)),
        "confusion": confusion(split, pred, superclass),
    }


def fine_axis(means: np.ndarray) -> np.ndarray:
    """Unit vector from the first to the second row of a 2 x D array of fine-class means."""
    diff = means[1] - means[0]
    return diff / np.linalg.norm(diff)


def variance_shares(x: np.ndarray, axis: np.ndarray) -> dict[str, float]:
    """Share of x's variance along the unit vector `axis` and along x's top principal axis."""
    cov = np.cov(np.asarray(x, dtype=np.float64), rowvar=False, bias=True)
    total = float(np.trace(cov))
    values, vectors = np.linalg.eigh(cov)
    return {"fine_axis": float(axis @ cov @ axis) / total,
            "top_axis": float(values[-1]) / total,
            "cos_fine_top": abs(float(axis @ vectors[:, -1]))}


def fine_pairs(fine_to_coarse: np.ndarray) -> list[np.ndarray]:
    """The two fine classes of each super-class, in super-class order (exactly 2 each)."""
    pairs = [np.flatnonzero(fine_to_coarse == s) for s in range(int(fine_to_coarse.max()) + 1)]
    for s, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"super-class {s} has {len(pair)} fine classes; need exactly 2")
    return pairs


def fine_means(features: np.ndarray, fine: np.ndarray, n_fine: int) -> np.ndarray:
    """Mean of the raw features of each fine class in float64 (n_fine x D)."""
    x = np.asarray(features, dtype=np.float64)
    return np.stack([x[fine == k].mean(axis=0) for k in range(n_fine)])


def train_shares(features: np.ndarray, fine: np.ndarray, fine_to_coarse: np.ndarray,
                 feature_norm: str) -> np.ndarray:
    """Per super-class, `variance_shares` of the normalised train features (S x SHARE_COLUMNS).

    The fine axis is the one the test side uses: between the two normalised fine-class means.
    """
    x = normalise_rows(features, feature_norm)
    means = normalise_rows(fine_means(features, fine, len(fine_to_coarse)), feature_norm)
    rows = []
    for pair in fine_pairs(fine_to_coarse):
        shares = variance_shares(x[np.isin(fine, pair)], fine_axis(means[pair]))
        rows.append([shares[c] for c in SHARE_COLUMNS])
    return np.asarray(rows, dtype=np.float64)


def nearest_mean_hits(x: np.ndarray, second_fine: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Whether each row's nearest of 2 fine-class means is its own fine class (second_fine)."""
    # Nearest of two points = which side of their bisecting hyperplane.
    nearer_second = (x - means.mean(axis=0)) @ (means[1] - means[0]) > 0
    return nearer_second == second_fine


def _leaves(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The float leaves of a nested dict, keyed by their dotted path."""
    out: dict[str, float] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out |= _leaves(value, f"{prefix}{key}.")
        elif isinstance(value, float):
            out[prefix + key] = value
    return out


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Mean, min and max over super-classes of every float leaf (those present in any row)."""
    leaves = [_leaves(r) for r in rows]
    keys = dict.fromkeys(k for leaf in leaves for k in leaf)
    out: dict[str, dict[str, float | int]] = {}
    for key in keys:
        values = [leaf[key] for leaf in leaves if key in leaf]
        out[key] = {"mean": float(np.mean(values)), "min": min(values), "max": max(values),
                    "superclasses": len(values)}
    return out


def epoch_axes(
    features: np.ndarray, pred: np.ndarray, train_means: np.ndarray, fine: np.ndarray,
    fine_to_coarse: np.ndarray, feature_norm: str, n_init: int, seed: int,
    train_share: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per super-class agreements and variance shares of one epoch, summaries, (a)/(c)-like accs.

    Every super-class must hold exactly 2 fine classes (a 2-means split is compared).
    `train_share` (`train_shares` of the same epoch) adds the train side of the variance shares.
    """
    x = normalise_rows(features, feature_norm)
    means = normalise_rows(train_means, feature_norm)
    norms = np.linalg.norm(np.asarray(features, dtype=np.float64), axis=1)
    coarse = fine_to_coarse[fine]
    rows, hits_a, hits_c = [], 0, 0.0
    for s, pair in enumerate(fine_pairs(fine_to_coarse)):
        idx = np.flatnonzero(coarse == s)
        second = fine[idx] == pair[1]
        row = {"superclass": s, "fine_classes": pair.tolist(),
               **split_agreements(x[idx], norms[idx], second, pred[idx], s, n_init, seed)}
        row["variance_share"] = variance_shares(x[idx], fine_axis(means[pair]))
        if train_share is not None:
            row["train_variance_share"] = dict(
                zip(SHARE_COLUMNS, map(float, train_share[s]), strict=True))
        hits = nearest_mean_hits(x[idx], second, means[pair])
        row["nearest_train_mean_acc"] = float(hits.mean())
        hits_a += int(hits.sum())
        hits_c += row["fine_label"]["agreement"] * len(idx)
        rows.append(row)
    return {"nearest_train_mean_acc": hits_a / len(fine), "test_cluster_acc": hits_c / len(fine),
            "mean_over_superclasses": summarise(rows), "per_superclass": rows}


def phase_axes(
    arrays: dict[str, np.ndarray], feature_norm: str, n_init: int, seed: int
) -> dict[str, Any]:
    """`epoch_axes` of every epoch of a phase-features file's arrays, keyed by epoch."""
    fine, f2c = arrays["test_fine"], arrays["fine_to_coarse"]
    return {str(e): epoch_axes(arrays[f"test_features_{e}"], arrays[f"test_pred_{e}"],
                               arrays[f"train_fine_means_{e}"], fine, f2c,
                               feature_norm, n_init, seed, arrays.get(f"train_variance_share_{e}"))
            for e in arrays["epochs"].tolist()}


def phase_file_axes(path: Path) -> dict[str, Any]:
    """`phase_axes` of one phase_features.npz, with the settings of its run's config.json."""
    cfg = load_json(Path(path).parent / "config.json")["config"]
    arrays = load_npz(path)
    epochs = arrays["epochs"].tolist()
    return {"seed": cfg["seed"], "feature_norm": cfg["feature_norm"], "n_init": cfg["n_init"],
            "onset_epoch": epochs[0], "end_epoch": epochs[-1],
            "epochs": phase_axes(arrays, cfg["feature_norm"], cfg["n_init"], cfg["seed"])}


def role_values(run: dict[str, Any], role: str) -> dict[str, float]:
    """One run's summary at its onset or end: (c), (a)-like, each mean over super-classes, and
    each candidate's agreement above its independent level."""
    out = run["epochs"][str(run[f"{role}_epoch"])]
    means = {k: v["mean"] for k, v in out["mean_over_superclasses"].items()}
    above = {f"{c}.above_chance": means[f"{c}.agreement"] - means[f"{c}.chance"]
             for c in CANDIDATES if f"{c}.agreement" in means}
    return {"test_cluster_acc": out["test_cluster_acc"],
            "nearest_train_mean_acc": out["nearest_train_mean_acc"], **means, **above}


def over_seeds(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Over runs (seeds), at the onset, at the end and for end - onset: spread and t95 of each
    `role_values` key (NaN where a run lacks it)."""
    roles = {role: [role_values(run, role) for run in runs] for role in ("onset", "end")}
    roles["change"] = [{k: end[k] - onset[k] for k in end if k in onset}
                       for onset, end in zip(roles["onset"], roles["end"], strict=True)]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for role, rows in roles.items():
        keys = dict.fromkeys(k for row in rows for k in row)
        values = {k: [row.get(k, float("nan")) for row in rows] for k in keys}
        out[role] = {k: {**spread(v), "t95": t_interval(v)} for k, v in values.items()}
    return out
