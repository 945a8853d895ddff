"""Tests for nbutils.stats: bootstrap intervals of accuracies and seed summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nbutils.stats import bootstrap_ci, bootstrap_count_ci, count_of, spread


def test_per_image_and_count_bootstraps_are_identical() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random(3000) < 0.8
    for seed in (0, 5):
        assert bootstrap_ci(correct, seed=seed) == bootstrap_count_ci(
            int(correct.sum()), len(correct), seed=seed)
    assert bootstrap_ci(correct, n_boot=200, level=0.9) == bootstrap_count_ci(
        int(correct.sum()), 3000, n_boot=200, level=0.9)


def test_count_bootstrap_matches_resampling_images_in_distribution() -> None:
    correct = np.zeros(400, dtype=bool)
    correct[:300] = True
    rng = np.random.default_rng(1)
    resampled = correct[rng.integers(0, 400, size=(4000, 400))].mean(axis=1)
    low, high = np.quantile(resampled, [0.025, 0.975])
    ours = bootstrap_count_ci(300, 400, n_boot=4000, seed=2)
    assert ours == pytest.approx((low, high), abs=0.006)


def test_all_and_none_correct_are_degenerate() -> None:
    assert bootstrap_ci(np.ones(50, dtype=bool)) == (1.0, 1.0)
    assert bootstrap_count_ci(0, 50) == (0.0, 0.0)


@pytest.mark.parametrize("k", [5000, 9000, 9616, 9990])
def test_interval_contains_estimate_and_has_normal_width(k: int) -> None:
    n, p = 10_000, k / 10_000
    low, high = bootstrap_count_ci(k, n)
    assert low <= p <= high
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / n), rel=0.15)


def test_same_seed_same_interval_other_seed_differs() -> None:
    assert bootstrap_count_ci(9157, 10_000, seed=3) == bootstrap_count_ci(9157, 10_000, seed=3)
    assert bootstrap_count_ci(9157, 10_000, seed=3) != bootstrap_count_ci(9157, 10_000, seed=4)


def test_count_of_inverts_stored_accuracies() -> None:
    assert count_of(0.9616, 10_000) == 9616
    assert count_of(0.99984, 50_000) == 49_992
    assert count_of(2 / 3, 3) == 2
    with pytest.raises(ValueError, match="not a count"):
        count_of(0.12345, 100)
    with pytest.raises(ValueError, match="accuracy"):
        count_of(1.5, 100)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: bootstrap_count_ci(11, 10), "n_correct"),
        (lambda: bootstrap_count_ci(-1, 10), "n_correct"),
        (lambda: bootstrap_count_ci(0, 0), "n"),
        (lambda: bootstrap_count_ci(1, 10, n_boot=0), "n_boot"),
        (lambda: bootstrap_count_ci(1, 10, seed=-1), "seed"),
        (lambda: bootstrap_count_ci(1, 10, level=1.0), "level"),
        (lambda: bootstrap_ci(np.array([1, 0, 1])), "correct"),
        (lambda: bootstrap_ci(np.zeros(0, dtype=bool)), "correct"),
        (lambda: spread([0.5, None]), "values"),
        (lambda: spread([0.5, True]), "values"),
    ],
)
def test_validation_names_parameter(call: object, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}:? must"):
        call()


def test_spread_closed_form() -> None:
    out = spread([0.90, 0.92, 0.97, math.nan])
    assert out["mean"] == pytest.approx(0.93, abs=1e-15)
    # Deviations -0.03, -0.01, 0.04: sum of squares 0.0026 over n - 1 = 2; the NaN is dropped.
    assert out["sd"] == pytest.approx(math.sqrt(0.0013), abs=1e-15)
    assert (out["n"], out["min"], out["max"]) == (3, 0.90, 0.97)
    assert out["values"] == [0.90, 0.92, 0.97]


def test_spread_is_nan_where_undefined() -> None:
    one, none = spread([0.5]), spread([])
    assert (one["mean"], one["n"], one["values"]) == (0.5, 1, [0.5]) and math.isnan(one["sd"])
    assert none["n"] == 0 and none["values"] == []
    assert all(math.isnan(none[k]) for k in ("mean", "sd", "min", "max"))
