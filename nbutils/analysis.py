"""Per-checkpoint analysis of a run: collapse metrics, fine-label recovery and the controls."""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from nbutils import cluster_axis
from nbutils.checks import FEATURE_NORMS
from nbutils.collapse import collapse_report
from nbutils.config import RunConfig
from nbutils.data import class_names, mapping_table, stratified_subset
from nbutils.features import feature_epochs, load_features
from nbutils.progress import tqdm
from nbutils.recovery import Recovery, raw_pixel_features, recover_fine_labels
from nbutils.run_data import RunData
from nbutils.runs import (
    compact_path,
    load_json,
    load_npz,
    model_dir,
    phase_features_path,
    record_time,
    save_json,
    save_npz,
)

# The labels each model is trained on, against which its collapse is measured.
LABELS_OF_MODEL = {"coarse": "coarse", "baseline": "fine"}


def clean_accuracy(feats: dict[str, np.ndarray], model: str, split: str) -> float:
    """Eval-mode accuracy of the head on the labels `model` was trained on."""
    fine = feats[f"{split}_fine"]
    target = feats["fine_to_coarse"][fine] if model == "coarse" else fine
    return float((feats[f"{split}_pred"] == target).mean())


def collapse_at(cfg: RunConfig, model: str, epoch: int) -> dict[str, Any]:
    """NC metrics (docs/protocol.md, section 5) of one checkpoint, plus its clean accuracies."""
    f = load_features(cfg, model, epoch)
    report = collapse_report(
        f["train_features"], f["train_fine"], f["fine_to_coarse"], LABELS_OF_MODEL[model],
        head_weight=f["head_weight"], head_bias=f["head_bias"],
    )
    return {"epoch": epoch, "train_acc": clean_accuracy(f, model, "train"),
            "test_acc": clean_accuracy(f, model, "test"), "nc": report}


def collapse_history(cfg: RunConfig, model: str, progress: bool = True) -> list[dict]:
    """Collapse metrics at every checkpoint of `model`, saved to <model>/collapse.json."""
    t0 = time.perf_counter()
    history = [collapse_at(cfg, model, e)
               for e in tqdm(feature_epochs(cfg, model), desc=f"NC {model}",
                             disable=not progress)]
    save_json(model_dir(cfg, model) / "collapse.json", history)
    record_time(cfg, f"collapse_{model}", time.perf_counter() - t0)
    return history


def recover(cfg: RunConfig, feats: dict[str, np.ndarray], use_pred: bool) -> Recovery:
    """Recovery (docs/protocol.md, section 4) of one feature file; (b)/(d) if coarse heads."""
    return recover_fine_labels(
        feats["train_features"], feats["train_fine"], feats["test_features"], feats["test_fine"],
        feats["fine_to_coarse"], test_coarse_pred=feats["test_pred"] if use_pred else None,
        n_init=cfg.n_init, seed=cfg.seed, feature_norm=cfg.feature_norm,
    )


def recovery_history(cfg: RunConfig, progress: bool = True) -> list[dict]:
    """Recovery metrics of the coarse model at every checkpoint, saved to coarse/recovery.json."""
    t0 = time.perf_counter()
    history = []
    for epoch in tqdm(feature_epochs(cfg, "coarse"), desc="recovery", disable=not progress):
        result = recover(cfg, load_features(cfg, "coarse", epoch), use_pred=True)
        history.append({"epoch": epoch, "recovery": result.metrics})
    save_json(model_dir(cfg, "coarse") / "recovery.json", history)
    record_time(cfg, "recovery", time.perf_counter() - t0)
    return history


def controls(cfg: RunConfig, data: RunData) -> dict[str, dict]:
    """Recovery from random-init features (the coarse model at epoch 0) and from raw pixels."""
    t0 = time.perf_counter()
    random_init = recover(cfg, load_features(cfg, "coarse", 0), use_pred=False).metrics
    raw = recover_fine_labels(
        raw_pixel_features(data.train.images), data.train.labels,
        raw_pixel_features(data.test.images, reference=data.train.images), data.test.labels,
        data.fine_to_coarse,
        n_init=cfg.n_init, seed=cfg.seed, feature_norm=cfg.feature_norm,
    ).metrics
    out = {"random_init": random_init, "raw_pixels": raw}
    save_json(Path(cfg.run_dir) / "controls.json", out)
    record_time(cfg, "controls", time.perf_counter() - t0)
    return out


def load_history(cfg: RunConfig) -> list[dict]:
    """Per-checkpoint entries merging recovery and the coarse model's collapse metrics."""
    nc = {h["epoch"]: h for h in load_json(model_dir(cfg, "coarse") / "collapse.json")}
    rec = {h["epoch"]: h for h in load_json(model_dir(cfg, "coarse") / "recovery.json")}
    return [{"epoch": e, "coarse_train_acc": nc[e]["train_acc"],
             "coarse_test_acc": nc[e]["test_acc"], "nc": nc[e]["nc"],
             "recovery": rec[e]["recovery"]} for e in sorted(nc) if e in rec]


def umap_embedding(
    features: np.ndarray,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    metric: str = "euclidean",
) -> np.ndarray:
    """Embed ``features`` (N x D) in 2-D with UMAP; a fixed seed makes it deterministic."""
    # Imported here: importing umap compiles numba code and takes seconds, and only this
    # function (notebook 05) needs it.
    import umap

    x = np.asarray(features, dtype=np.float32)
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), min_dist=min_dist,
                        random_state=seed, metric=metric, n_components=2)
    with warnings.catch_warnings():
        # A fixed random_state forces one thread; umap warns about it every call.
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def umap_sample(cfg: RunConfig, feats: dict[str, np.ndarray]) -> np.ndarray:
    """Indices of the stratified train sample of about `umap_points` that UMAP embeds."""
    fine_all = feats["train_fine"]
    per_class = max(1, cfg.umap_points // len(feats["fine_to_coarse"]))
    return stratified_subset(fine_all, min(per_class, int(np.bincount(fine_all).min())), cfg.seed)


def umap_views(cfg: RunConfig, epoch: int | None = None) -> dict[str, Any]:
    """UMAP embeddings of a stratified train sample: all points, then each super-class alone."""
    feats = load_features(cfg, "coarse", cfg.epochs if epoch is None else epoch)
    idx = umap_sample(cfg, feats)
    return umap_views_of(cfg, feats["train_features"][idx], feats["train_fine"][idx],
                         feats["fine_to_coarse"])


def umap_views_of(
    cfg: RunConfig, x: np.ndarray, fine: np.ndarray, f2c: np.ndarray
) -> dict[str, Any]:
    """UMAP of features `x` with fine labels `fine`: the whole set, then each super-class."""
    t0 = time.perf_counter()
    coarse = f2c[fine]
    names = class_names(cfg.dataset, len(f2c))
    groups = mapping_table(f2c, names)
    embed = partial(umap_embedding, n_neighbors=cfg.umap_neighbors, seed=cfg.seed)
    members = [np.flatnonzero(f2c == s) for s in range(len(groups))]
    views = {
        "all": embed(x), "coarse": coarse,
        "coarse_names": [" / ".join(groups[s]) for s in range(len(groups))],
        "per_superclass": [embed(x[coarse == s]) for s in range(len(groups))],
        # Fine labels renumbered 0..k-1 inside each super-class, so each panel has its own legend.
        "fine": [np.searchsorted(members[s], fine[coarse == s]) for s in range(len(groups))],
        "fine_names": [groups[s] for s in range(len(groups))],
        "titles": [f"super-class {s}: {' / '.join(groups[s])}" for s in range(len(groups))],
    }
    record_time(cfg, "umap", time.perf_counter() - t0)
    return views



def umap_views_from_compact(cfg: RunConfig) -> dict[str, Any]:
    """UMAP views of the float16 train sample kept in compact.npz (no features needed)."""
    saved = load_npz(compact_path(cfg))
    return umap_views_of(cfg, saved["umap_features"].astype(np.float32), saved["umap_fine"],
                         saved["fine_to_coarse"])

def export_compact(cfg: RunConfig) -> Path:
    """Save what the figures need of the last checkpoint: the UMAP sample and final labels.

    A few MB instead of the features (120 MB per checkpoint at w=64), so that a run analysed on
    a GPU box can be brought back and drawn elsewhere (`python -m nbutils render`).
    """
    feats = load_features(cfg, "coarse", cfg.epochs)
    final = recover(cfg, feats, use_pred=True)
    idx = umap_sample(cfg, feats)
    # Compressed: it is published with the figures (figures/<profile>/logs/).
    return save_npz(
        compact_path(cfg), compress=True, epoch=np.int64(cfg.epochs),
        fine_to_coarse=feats["fine_to_coarse"],
        # float16 keeps the file small; UMAP is for looking only (notebook 05 uses float32).
        umap_features=feats["train_features"][idx].astype(np.float16),
        umap_fine=feats["train_fine"][idx],
        test_fine=feats["test_fine"], test_pred_true_coarse=final.test_pred_true_coarse,
        test_pred_pred_coarse=final.test_pred_pred_coarse,
    )


def export_phase_features(cfg: RunConfig) -> Path | None:
    """Save the test features of the coarse model's phase checkpoints (feature_epochs='phase').

    For each extracted epoch after init (the terminal-phase onset, the end): the test features
    in float16 with their fine labels and the head's predictions, the train features' mean
    per fine class in float64, and, for a row-wise feature normalisation, the train side of the
    variance shares (`cluster_axis.train_shares`). That is what test clustering (c) and the fine
    axis of a super-class need, at about 2.6 MB per epoch for w=16 (the train features are 20
    times more). None for runs that extract every checkpoint.
    """
    if cfg.feature_epochs != "phase":
        return None
    arrays: dict[str, np.ndarray] = {}
    epochs = [e for e in feature_epochs(cfg, "coarse") if e > 0]
    for epoch in epochs:
        f = load_features(cfg, "coarse", epoch)
        fine, f2c = f["train_fine"], f["fine_to_coarse"]
        arrays |= {f"test_features_{epoch}": f["test_features"].astype(np.float16),
                   f"test_pred_{epoch}": f["test_pred"],
                   f"train_fine_means_{epoch}": cluster_axis.fine_means(
                       f["train_features"], fine, len(f2c))}
        if cfg.feature_norm in cluster_axis.ROW_NORMS:
            arrays[f"train_variance_share_{epoch}"] = cluster_axis.train_shares(
                f["train_features"], fine, f2c, cfg.feature_norm)
        arrays |= {"test_fine": f["test_fine"], "fine_to_coarse": f["fine_to_coarse"]}
    return save_npz(phase_features_path(cfg), compress=True, epochs=np.asarray(epochs), **arrays)


def feature_norm_ablation(cfg: RunConfig, epoch: int | None = None) -> dict[str, dict]:
    """Recovery under every feature normalisation, on one checkpoint of the coarse model.

    Choose by `train_cluster_acc` (train labels only); the test numbers are reported, not used.
    """
    feats = load_features(cfg, "coarse", cfg.epochs if epoch is None else epoch)
    out = {}
    for norm in FEATURE_NORMS:
        out[norm] = recover(replace(cfg, feature_norm=norm), feats, use_pred=True).metrics
    return out
