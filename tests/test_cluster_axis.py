"""Tests for nbutils.cluster_axis on synthetic features whose answers are known in closed form."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nbutils.cluster_axis import (
    chance_agreement,
    compare,
    confusion,
    epoch_axes,
    normalise_rows,
    over_seeds,
    phase_file_axes,
    split_agreements,
    train_shares,
    variance_shares,
)
from nbutils.runs import save_json, save_npz

F2C = np.array([0, 1, 0, 1])  # two super-classes of two fine classes each


def blobs_on_e1(n: int, a: float, sigma: float, dim: int, seed: int) -> tuple:
    """n points per class at -a e1 and +a e1 with isotropic noise sigma; (x, is_second)."""
    rng = np.random.default_rng(seed)
    second = np.repeat([False, True], n)
    x = rng.normal(scale=sigma, size=(2 * n, dim))
    x[:, 0] += np.where(second, a, -a)
    return x, second


def test_variance_share_of_four_points_is_exact() -> None:
    a, b = 3.0, 2.0
    x = np.array([[a, 0], [-a, 0], [0, b], [0, -b]])
    shares = variance_shares(x, np.array([1.0, 0.0]))
    assert shares["fine_axis"] == pytest.approx(a**2 / (a**2 + b**2), abs=1e-12)
    assert shares["top_axis"] == pytest.approx(a**2 / (a**2 + b**2), abs=1e-12)
    assert shares["cos_fine_top"] == pytest.approx(1.0, abs=1e-12)
    assert variance_shares(x, np.array([0.0, 1.0]))["fine_axis"] == pytest.approx(
        b**2 / (a**2 + b**2), abs=1e-12)


def test_blobs_along_e1_follow_the_fine_label() -> None:
    a, sigma, dim = 4.0, 1.0, 5
    x, second = blobs_on_e1(20_000, a, sigma, dim, seed=0)
    out = split_agreements(x, np.linalg.norm(x, axis=1), second, np.zeros(len(x), int),
                           superclass=0, n_init=3, seed=0)
    assert out["fine_label"]["agreement"] > 0.999  # P(noise beyond 4 sigma) ~ 3e-5
    assert out["fine_label"]["chance"] == pytest.approx(0.5, abs=0.01)
    # Variance along e1 is a^2 + sigma^2 out of a^2 + dim sigma^2.
    shares = variance_shares(x, np.eye(dim)[0])
    assert shares["fine_axis"] == pytest.approx((a**2 + sigma**2) / (a**2 + dim * sigma**2),
                                                abs=0.005)
    assert shares["top_axis"] >= shares["fine_axis"]
    assert shares["cos_fine_top"] > 0.999


def test_split_that_follows_the_norm_ignores_the_fine_label() -> None:
    # Two shells of radius 1 and 5 on e1, fine label crossed with the shell exactly half-half.
    rng = np.random.default_rng(1)
    n = 4000
    big = np.arange(n) // 2 % 2 == 1
    second = np.arange(n) % 2 == 1
    x = 0.05 * rng.normal(size=(n, 3))
    x[:, 0] += np.where(big, 5.0, 1.0)
    out = split_agreements(x, np.linalg.norm(x, axis=1), second, np.zeros(n, int),
                           superclass=0, n_init=3, seed=0)
    assert out["norm_above_median"]["agreement"] == 1.0
    assert out["fine_label"]["agreement"] == 0.5


def test_wrong_images_in_a_blob_of_their_own() -> None:
    rng = np.random.default_rng(2)
    pred = np.repeat([0, 1, 2], [900, 60, 40])  # super-class 0: 100 wrong, 60 of them to 1
    x = rng.normal(size=(1000, 4))
    x[pred != 0, 1] += 20.0
    out = split_agreements(x, np.linalg.norm(x, axis=1), np.arange(1000) % 2 == 0, pred,
                           superclass=0, n_init=3, seed=0)
    assert out["correct_vs_wrong"]["agreement"] == 1.0
    # Independent splits of shares 0.1 and 0.1: 0.1 * 0.1 + 0.9 * 0.9.
    assert out["correct_vs_wrong"]["chance"] == pytest.approx(0.82)
    assert sorted(out["wrong_share_per_cluster"]) == [0.0, 1.0]
    assert out["confusion"]["confused_with"] == 1
    assert out["confusion"]["confused_share"] == pytest.approx(0.6)


def test_confusion_agreement_counts_only_wrong_images() -> None:
    split = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 2, 2, 3, 2, 3, 3, 3])  # wrong: 2, 2, 3 | 2, 3, 3, 3
    out = confusion(split, pred, superclass=0)
    # Most common wrong class: 3 (4 of 7); clusters {2, 2, 3} and {2, 3, 3, 3}: 5 of 7 match.
    assert out["confused_with"] == 3 and out["n_wrong"] == 7
    assert out["confused_share"] == pytest.approx(4 / 7)
    assert out["agreement"] == pytest.approx(5 / 7)
    assert confusion(split, np.zeros(8, int), superclass=0) is None


def test_chance_agreement_closed_form() -> None:
    split = np.array([1] * 10 + [0] * 90)
    labels = np.array([True] * 5 + [False] * 95)
    assert chance_agreement(split, labels) == pytest.approx(0.1 * 0.05 + 0.9 * 0.95)
    assert chance_agreement(np.array([0, 1]), np.array([True, False])) == 0.5
    assert compare(np.array([0, 0, 1, 1]), np.array([True, True, False, False]))["agreement"] == 1.0


def test_l2_normalisation_ignores_row_scale() -> None:
    x, second = blobs_on_e1(500, 3.0, 1.0, 4, seed=3)
    x[:, 1] += 10.0  # keep rows away from the origin so that their direction carries the class
    scaled = x * np.random.default_rng(4).uniform(0.5, 2.0, size=(len(x), 1))
    np.testing.assert_allclose(normalise_rows(scaled, "l2"), normalise_rows(x, "l2"), atol=1e-12)
    with pytest.raises(ValueError, match="feature_norm"):
        normalise_rows(x, "standardize")


def synthetic_epoch(seed: int) -> dict[str, np.ndarray]:
    """Test features of 4 fine classes in 2 super-classes, each class a blob off the origin."""
    rng = np.random.default_rng(seed)
    centres = 10.0 * np.eye(6)[:4] + 10.0 * np.eye(6)[4]
    fine = np.repeat(np.arange(4), 300)
    x = centres[fine] + rng.normal(size=(len(fine), 6))
    pred = F2C[fine].copy()
    pred[::50] = 1 - pred[::50]
    return {"features": x, "pred": pred, "train_means": centres, "fine": fine}


def test_epoch_axes_recovers_separated_classes() -> None:
    d = synthetic_epoch(5)
    out = epoch_axes(d["features"].astype(np.float16), d["pred"], d["train_means"], d["fine"],
                     F2C, "l2", n_init=3, seed=0)
    assert out["nearest_train_mean_acc"] == 1.0 and out["test_cluster_acc"] == 1.0
    assert [r["superclass"] for r in out["per_superclass"]] == [0, 1]
    summary = out["mean_over_superclasses"]
    assert summary["fine_label.agreement"]["mean"] == 1.0
    assert summary["variance_share.fine_axis"]["min"] <= summary["variance_share.top_axis"]["max"]
    json.dumps(out)


def test_epoch_axes_refuses_a_superclass_without_two_fine_classes() -> None:
    d = synthetic_epoch(6)
    with pytest.raises(ValueError, match="exactly 2"):
        epoch_axes(d["features"], d["pred"], d["train_means"], d["fine"], np.array([0, 0, 0, 1]),
                   "none", n_init=1, seed=0)


def test_phase_file_axes_reads_the_run_settings(tmp_path) -> None:
    a, b = synthetic_epoch(7), synthetic_epoch(8)
    arrays = {"epochs": np.array([3, 9]), "test_fine": a["fine"], "fine_to_coarse": F2C}
    for e, d in ((3, a), (9, b)):
        arrays |= {f"test_features_{e}": d["features"].astype(np.float16),
                   f"test_pred_{e}": d["pred"], f"train_fine_means_{e}": d["train_means"]}
    save_npz(tmp_path / "phase_features.npz", **arrays)
    save_json(tmp_path / "config.json", {"config": {"seed": 2, "feature_norm": "l2", "n_init": 2}})
    out = phase_file_axes(tmp_path / "phase_features.npz")
    assert (out["onset_epoch"], out["end_epoch"], out["seed"]) == (3, 9, 2)
    assert list(out["epochs"]) == ["3", "9"]
    assert out["epochs"]["9"]["test_cluster_acc"] == 1.0


def test_train_shares_of_four_points_per_superclass_are_exact() -> None:
    # Super-class 0: fine classes at +-a e1 with spread +-b on e2; super-class 1 the same rotated.
    a, b = 3.0, 2.0
    x = np.array([[-a, b], [-a, -b], [a, b], [a, -b],
                  [b, -a], [-b, -a], [b, a], [-b, a]], dtype=np.float32)
    fine = np.array([0, 0, 2, 2, 1, 1, 3, 3])
    out = train_shares(x, fine, F2C, "none")
    share = a**2 / (a**2 + b**2)
    np.testing.assert_allclose(out, [[share, share, 1.0], [share, share, 1.0]], atol=1e-12)
    assert out.dtype == np.float64


def test_train_shares_where_the_top_axis_is_not_the_fine_axis() -> None:
    # Fine classes at +-1 e1; a larger spread +-3 along e2 inside each class.
    x = np.array([[-1, 3], [-1, -3], [1, 3], [1, -3]] * 2, dtype=np.float64)
    fine = np.array([0, 0, 2, 2, 1, 1, 3, 3])
    out = train_shares(x, fine, F2C, "none")
    np.testing.assert_allclose(out[0], [0.1, 0.9, 0.0], atol=1e-12)


def test_epoch_axes_adds_the_train_side_when_given() -> None:
    d = synthetic_epoch(9)
    train = train_shares(d["features"], d["fine"], F2C, "l2")
    out = epoch_axes(d["features"], d["pred"], d["train_means"], d["fine"], F2C, "l2",
                     n_init=2, seed=0, train_share=train)
    row = out["per_superclass"][1]["train_variance_share"]
    columns = ("fine_axis", "top_axis", "cos_fine_top")
    assert row == pytest.approx(dict(zip(columns, train[1], strict=True)))
    assert "train_variance_share.fine_axis" in out["mean_over_superclasses"]
    plain = epoch_axes(d["features"], d["pred"], d["train_means"], d["fine"], F2C, "l2",
                       n_init=2, seed=0)
    assert "train_variance_share" not in plain["per_superclass"][0]


def fake_run(onset: float, end: float) -> dict:
    """A run summary whose (c) and fine-label agreement are `onset` then `end`, chance 0.5."""
    def epoch(v: float) -> dict:
        return {"test_cluster_acc": v, "nearest_train_mean_acc": 0.9,
                "mean_over_superclasses": {"fine_label.agreement": {"mean": v},
                                           "fine_label.chance": {"mean": 0.5}}}
    return {"onset_epoch": 10, "end_epoch": 20, "epochs": {"10": epoch(onset), "20": epoch(end)}}


def test_over_seeds_spreads_and_changes_are_exact() -> None:
    out = over_seeds([fake_run(0.7, 0.6), fake_run(0.9, 0.6)])
    assert out["onset"]["test_cluster_acc"]["mean"] == pytest.approx(0.8)
    assert out["onset"]["test_cluster_acc"]["sd"] == pytest.approx(np.sqrt(0.02))
    assert out["end"]["fine_label.above_chance"]["mean"] == pytest.approx(0.1)
    assert out["end"]["fine_label.above_chance"]["sd"] == pytest.approx(0.0, abs=1e-12)
    assert out["change"]["fine_label.agreement"]["values"] == pytest.approx([-0.1, -0.3])
    # Student-t, 1 dof: half-width 12.706 * sd / sqrt(2) with sd = 0.1 * sqrt(2).
    lo, hi = out["change"]["test_cluster_acc"]["t95"]
    assert (lo, hi) == pytest.approx((-0.2 - 1.2706205, -0.2 + 1.2706205), abs=1e-6)
    assert "correct_vs_wrong.above_chance" not in out["end"]
