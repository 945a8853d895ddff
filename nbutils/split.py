"""The 20-label split of notebook 09: every class cut at random into two halves as labels.

A model trained on the 20 halves is measured as the coarse model of a real merged pair is: how
far the halves, which share every image statistic, separate in its features. `run_split` trains
through train.train_model on the relabelled data; `split_summary` sets the halves beside real
merged pairs over seeds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from nbutils import checks, phase
from nbutils.collapse import collapse_report
from nbutils.config import RunConfig, resolve
from nbutils.data import Split
from nbutils.device import select_device
from nbutils.features import extract_checkpoint, load_features
from nbutils.lock import run_lock
from nbutils.metrics import run_classes, value
from nbutils.recovery import recover_fine_labels
from nbutils.run_data import RunData, load_run_data
from nbutils.runs import create_run, features_path, load_json, model_dir, save_json
from nbutils.stats import spread
from nbutils.summaries import config_of
from nbutils.sweeps import comparable, root_hint
from nbutils.train import train_model

# Split model -> the pipeline model that trains it: the pipeline's "baseline" learns the run's
# fine labels, here the 20 halves; its "coarse" model learns their classes, the 10 real ones.
SPLIT_MODELS = {"20-label": "baseline", "10-label": "coarse"}
SPLIT_LABELS = {"20-label": "20-label model (halves are labels)",
                "10-label": "10-label model (halves unlabelled)"}


def split_halves(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded random half (0 or 1) for every sample, balanced within each class."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    half = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        half[idx[len(idx) // 2:]] = 1
    return half


def split_run_data(cfg: RunConfig) -> RunData:
    """The run's data with every class split at random into halves 2c and 2c+1 (20 labels).

    The fine -> super-class map sends each half back to its class, so the pipeline's 'baseline'
    model is the 20-label model and its 'coarse' model the 10-label one (SPLIT_MODELS).
    """
    data = load_run_data(cfg)

    def relabel(split: Split, seed: int) -> Split:
        """Labels 2 * class + random half."""
        return Split(split.images, 2 * split.labels + split_halves(split.labels, seed))

    # Test halves are drawn with another seed: they are a fresh random split, as on train.
    return RunData(relabel(data.train, cfg.seed), relabel(data.test, cfg.seed + 1),
                   np.arange(20, dtype=np.int64) // 2)


def half_separation(cfg: RunConfig, split_model: str, epoch: int) -> dict[str, Any]:
    """How far the halves of each class separate in one checkpoint's features.

    `own_train_acc` is the clean (eval-mode) train accuracy on the labels the model was trained
    on, 20 halves or 10 classes, which says whether and when it fits them. For the 20-label
    model, `head_half_acc_*` is the head's half decision where it named the right class: on
    train it measures memorisation of the halves; on test the halves are a fresh random split,
    so it is at chance (0.5) by construction.
    """
    f = load_features(cfg, SPLIT_MODELS[split_model], epoch)
    f2c = f["fine_to_coarse"]
    trained_on = "fine" if split_model == "20-label" else "coarse"
    nc = collapse_report(f["train_features"], f["train_fine"], f2c, trained_on,
                         head_weight=f["head_weight"], head_bias=f["head_bias"])
    rec = recover_fine_labels(f["train_features"], f["train_fine"], f["test_features"],
                              f["test_fine"], f2c, n_init=cfg.n_init, seed=cfg.seed,
                              feature_norm=cfg.feature_norm, probe=False).metrics
    classes = {s: f2c[f[f"{s}_fine"]] for s in ("train", "test")}
    pred_class = {s: f[f"{s}_pred"] // 2 if trained_on == "fine" else f[f"{s}_pred"]
                  for s in ("train", "test")}
    own = f["train_fine"] if trained_on == "fine" else classes["train"]
    out = {"epoch": epoch, "train_cluster_acc": rec["train_cluster_acc"],
           "test_acc_true_class": rec["test_acc_true_coarse"],
           "fine_variance_fraction": nc["fine_structure"]["fine_variance_fraction_mean"],
           "nc1_within_class": nc["fine_structure"]["nc1_within_superclass_mean"],
           "own_train_acc": float((f["train_pred"] == own).mean()),
           "class_train_acc": float((pred_class["train"] == classes["train"]).mean()),
           "class_test_acc": float((pred_class["test"] == classes["test"]).mean())}
    if trained_on == "fine":
        for split in ("train", "test"):
            right = pred_class[split] == classes[split]
            hit = f[f"{split}_pred"][right] == f[f"{split}_fine"][right]
            out[f"head_half_acc_{split}"] = float(hit.mean()) if right.any() else math.nan
    return out


def split_configs(profile: str, root: str | Path, seeds: list[int],
                  **common: Any) -> list[RunConfig]:
    """Validated configs of the split runs, one per seed, both models trained.

    `train_baseline` in `common` is ignored: a split run always trains both of its models.
    """
    if not isinstance(seeds, list) or not seeds:
        raise ValueError(f"seeds: must be a non-empty list, got {seeds!r}")
    given = {k: v for k, v in common.items() if v is not None and k != "train_baseline"}
    if "mapping" in given:
        raise ValueError("overrides: mapping cannot be set, the split run defines its labels")
    return [resolve(profile, run_dir=str(Path(root) / f"seed={s}"), seed=s, train_baseline=True,
                    **given) for s in seeds]


def run_split(cfg: RunConfig, models: tuple[str, ...] = tuple(SPLIT_MODELS),
              progress: bool = True) -> dict[str, Any]:
    """Train the split run's models (resuming), extract features, measure the halves.

    Each model records its history over checkpoints and its terminal phase (nbutils.phase) on
    the labels it was trained on.
    """
    checks.flag("progress", progress)
    unknown = sorted(set(models) - set(SPLIT_MODELS))
    if unknown or not models:
        raise ValueError(f"models: unknown or empty {unknown or models}; allowed: "
                         f"{', '.join(SPLIT_MODELS)}")
    path = Path(cfg.run_dir) / "split_results.json"
    if path.is_file():
        done = load_json(path)
        if (comparable(done["config"]) == comparable(cfg.to_dict())
                and all(m in done for m in models)):
            return done
    data = split_run_data(cfg)
    device = select_device(cfg.device)
    out: dict[str, Any] = {"config": cfg.to_dict(), "labels": "20 random halves (2 per class)"}
    # A second process on the same split run waits for no one: it fails fast, naming the holder.
    with run_lock(cfg.run_dir):
        create_run(cfg, hint=root_hint(cfg))
        for model in models:
            trained = SPLIT_MODELS[model]
            log = train_model(cfg, trained, data, progress=progress)
            for epoch in cfg.checkpoint_epochs:
                if not features_path(cfg, trained, epoch).is_file():
                    extract_checkpoint(cfg, trained, epoch, data, device, progress)
            history = [half_separation(cfg, model, e) for e in cfg.checkpoint_epochs]
            meta = load_json(model_dir(cfg, trained) / "train_meta.json")
            out[model] = {"amp": meta["amp"], "environment": meta.get("environment"),
                          "train_acc_augmented": log[-1]["train_acc"],
                          "test_acc": log[-1]["test_acc"],
                          "phase": phase.terminal_phase([h["epoch"] for h in history],
                                                        [h["own_train_acc"] for h in history]),
                          "history": history}
        save_json(path, out)
    return out


SPLIT_KEYS = ("train_cluster_acc", "test_acc_true_class", "fine_variance_fraction",
              "nc1_within_class")
MERGED_KEYS = {"train_cluster_acc": "recovery.train_cluster_acc",
               "test_acc_true_class": "recovery.test_acc_true_coarse",
               "fine_variance_fraction": "nc.fine_structure.fine_variance_fraction_mean",
               "nc1_within_class": "nc.fine_structure.nc1_within_superclass_mean"}


def split_summary(split_runs: list[dict[str, Any]],
                  merged_runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Spread over seeds of the halves' separation (each model) beside real merged pairs."""
    out = {}
    for model, label in SPLIT_LABELS.items():
        runs = [r for r in split_runs if model in r]
        if runs:
            finals = [r[model]["history"][-1] for r in runs]
            keys = (*SPLIT_KEYS, "own_train_acc", "class_train_acc", "class_test_acc",
                    "head_half_acc_train", "head_half_acc_test")
            out[model] = {"label": label, "seeds": [r["config"]["seed"] for r in runs],
                          "reached_terminal_phase": [r[model]["phase"]["reached"] for r in runs],
                          **{k: spread([f.get(k, math.nan) for f in finals]) for k in keys}}
    if merged_runs:
        out["merged"] = {
            "label": f"{run_classes(merged_runs[0]).n_coarse}-label "
                     f"{config_of(merged_runs[0], 'mapping')} model (real pairs merged)",
            "seeds": [config_of(r, "seed") for r in merged_runs],
            "reached_terminal_phase": [phase.terminal_phase_of(r)["reached"]
                                       for r in merged_runs],
            **{k: spread([value(r, p) for r in merged_runs]) for k, p in MERGED_KEYS.items()}}
    return out
