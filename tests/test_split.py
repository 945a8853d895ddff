"""The 20-label split of notebook 09: halves, their data, their separation and its summary."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_experiments import fake_result

from nbutils import run_index, split
from nbutils.config import resolve
from nbutils.runs import features_path, save_npz


def test_split_halves_are_balanced_per_class_and_seeded() -> None:
    labels = np.repeat(np.arange(4), 6)
    half = split.split_halves(labels, seed=3)
    assert np.array_equal(np.bincount(labels[half == 1]), np.full(4, 3))
    assert np.array_equal(half, split.split_halves(labels, seed=3))
    assert not np.array_equal(half, split.split_halves(labels, seed=4))


def test_split_run_data_relabels_into_20_halves(fake_cache: Path) -> None:
    cfg = resolve("ci", data_root=str(fake_cache), train_per_class=4, test_per_class=2)
    data = split.split_run_data(cfg)
    assert data.num_classes("baseline") == 20 and data.num_classes("coarse") == 10
    assert np.array_equal(np.bincount(data.train.labels), np.full(20, 2))
    assert np.array_equal(data.labels("coarse", "train"), data.train.labels // 2)


def test_split_configs_refuse_what_the_split_sets(tmp_path: Path) -> None:
    cfgs = split.split_configs("ci", tmp_path, [0, 1])
    assert [c.seed for c in cfgs] == [0, 1] and all(c.train_baseline for c in cfgs)
    assert split.split_configs("exp", tmp_path, [0], train_baseline=False)[0].train_baseline
    with pytest.raises(ValueError, match="mapping"):
        split.split_configs("ci", tmp_path, [0], mapping="semantic")
    with pytest.raises(ValueError, match="seeds"):
        split.split_configs("ci", tmp_path, [])


def write_features(cfg, model: str, gap: float, seed: int = 0) -> None:
    """A feature file in which the two halves of each class lie `gap` apart along one axis."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for part in ("train", "test"):
        fine = np.repeat(np.arange(20), 30)
        x = rng.normal(size=(len(fine), 8)).astype(np.float32)
        x[:, 0] += 10 * (fine // 2)
        x[:, 1] += gap * (fine % 2)
        pred = fine if model == "baseline" else fine // 2
        arrays |= {f"{part}_features": x, f"{part}_fine": fine, f"{part}_pred": pred}
    k = 20 if model == "baseline" else 10
    save_npz(features_path(cfg, model, cfg.epochs), **arrays, head_weight=np.ones((k, 8)),
             head_bias=np.zeros(k), fine_to_coarse=np.arange(20) // 2, epoch=np.int64(cfg.epochs))


def test_half_separation_on_known_geometry(tmp_path: Path) -> None:
    cfg = resolve("ci", run_dir=str(tmp_path), n_init=4, feature_norm="none")
    write_features(cfg, "baseline", gap=12.0)
    apart = split.half_separation(cfg, "20-label", cfg.epochs)
    assert apart["train_cluster_acc"] == 1.0 and apart["test_acc_true_class"] == 1.0
    # between / (between + within): gap^2 / 4 against a unit variance in 8 dimensions
    assert math.isclose(apart["fine_variance_fraction"], 36 / (36 + 8), rel_tol=0.1)
    assert apart["head_half_acc_train"] == 1.0 and apart["class_test_acc"] == 1.0
    assert apart["own_train_acc"] == 1.0 and apart["class_train_acc"] == 1.0
    write_features(cfg, "coarse", gap=0.0)
    mixed = split.half_separation(cfg, "10-label", cfg.epochs)
    assert mixed["test_acc_true_class"] < 0.6 and mixed["fine_variance_fraction"] < 0.02
    assert "head_half_acc_test" not in mixed


def test_split_summary_sets_halves_beside_merged_pairs() -> None:
    final = {"train_cluster_acc": 0.9, "test_acc_true_class": 0.5, "fine_variance_fraction": 0.1,
             "nc1_within_class": 3.0, "own_train_acc": 1.0, "class_train_acc": 1.0,
             "class_test_acc": 0.7, "head_half_acc_train": 0.95, "head_half_acc_test": 0.5}
    fitted = {"reached": True, "onset_epoch": 10}
    runs = [{"config": {"seed": s}, "20-label": {"history": [final], "phase": fitted},
             "10-label": {"history": [final], "phase": fitted}} for s in (0, 1)]
    summary = split.split_summary(runs, [fake_result(0), fake_result(1)])
    assert list(summary) == ["20-label", "10-label", "merged"]
    assert summary["20-label"]["train_cluster_acc"]["n"] == 2
    assert summary["20-label"]["reached_terminal_phase"] == [True, True]
    assert summary["merged"]["test_acc_true_class"]["mean"] == 0.9
    assert summary["merged"]["reached_terminal_phase"] == [True, True]
    assert "mod5" in summary["merged"]["label"]
    row = run_index.split_row({**runs[0], "config": resolve("tpt").to_dict()}, "20-label")
    assert row["experiment"] == "split-20-label" and row["mapping"] == "halves"
    assert row["steps"] == 6000 and row["tpt_step"] == 200 and math.isnan(row["nc1_coarse"])


def test_a_split_run_held_by_another_process_is_refused(fake_cache: Path, tmp_path: Path) -> None:
    from test_lock import start_holder

    from nbutils.lock import RunLocked

    cfg = split.split_configs("ci", tmp_path / "split", [0], data_root=str(fake_cache),
                           train_per_class=4, test_per_class=2)[0]
    holder = start_holder(Path(cfg.run_dir))
    try:
        with pytest.raises(RunLocked, match=f"PID {holder.pid}"):
            split.run_split(cfg, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert not (Path(cfg.run_dir) / "split_results.json").exists()
