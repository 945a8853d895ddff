"""The synthetic model: mixture geometry by construction, and its qualitative claims."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from nbutils.synthetic import (
    make_mixture,
    mixture_means,
    separation_sweep,
    summarise_sweep,
    train_synthetic,
)

# Small enough for about a second per training on 2 cores.
SMALL = {"n_per_cluster": 100, "num_coarse": 3, "dim": 16}
TRAIN = {"hidden": 64, "epochs": 30, "checkpoints": [0, 30], "n_init": 4}


def test_fine_means_are_at_the_separation_and_orthogonal_to_the_centres() -> None:
    means = mixture_means(3, 2, 16, separation=2.5, coarse_separation=8.0, seed=1)
    pairs = means.reshape(3, 2, 16)
    assert np.allclose(np.linalg.norm(pairs[:, 0] - pairs[:, 1], axis=1), 2.5)
    centres = pairs.mean(axis=1)
    offsets = pairs[:, 0] - centres
    assert np.allclose(centres @ offsets.T, 0)
    for a, b in itertools.combinations(range(3), 2):
        assert math.isclose(np.linalg.norm(centres[a] - centres[b]), 8.0)


def test_three_fine_clusters_are_equidistant() -> None:
    means = mixture_means(2, 3, 16, separation=3.0, coarse_separation=5.0, seed=0)
    first = means[:3]
    dists = [np.linalg.norm(first[i] - first[j]) for i, j in itertools.combinations(range(3), 2)]
    assert np.allclose(dists, 3.0)


def test_mixture_shapes_labels_and_seeding() -> None:
    data = make_mixture(2.0, seed=3, **SMALL)
    assert data.x_train.shape == (600, 16) and data.x_test.shape == (600, 16)
    assert np.array_equal(np.bincount(data.fine_train), np.full(6, 100))
    assert np.array_equal(data.fine_to_coarse, [0, 0, 1, 1, 2, 2])
    assert np.array_equal(data.coarse("test"), data.fine_test // 2)
    again = make_mixture(2.0, seed=3, **SMALL)
    assert np.array_equal(data.x_train, again.x_train)
    assert not np.array_equal(data.x_train, data.x_test)


@pytest.mark.parametrize("kwargs, name", [
    ({"separation": -1.0}, "separation"),
    ({"separation": math.nan}, "separation"),
    ({"separation": 1.0, "dim": 4}, "dim"),
    ({"separation": 1.0, "num_coarse": 1}, "num_coarse"),
    ({"separation": 1.0, "fine_per_coarse": 1}, "fine_per_coarse"),
    ({"separation": 1.0, "seed": -2}, "seed"),
    ({"separation": 1.0, "n_per_cluster": 0}, "n_per_cluster"),
])
def test_bad_mixture_parameters_are_named(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_mixture(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"epochs": 0}, "epochs"), ({"lr": 0.0}, "lr"), ({"hidden": 2.5}, "hidden"),
    ({"checkpoints": [0, 999]}, "checkpoints"), ({"weight_decay": -1.0}, "weight_decay"),
])
def test_bad_training_parameters_are_named(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        train_synthetic(make_mixture(1.0, **SMALL), **kwargs)


@pytest.fixture(scope="module")
def sweep() -> list[dict]:
    """Separations 0 (no fine structure) and 8 (far apart), two seeds each."""
    return separation_sweep([0.0, 8.0], [0, 1], SMALL, TRAIN)


def final(sweep: list[dict], separation: float, key: str) -> list[float]:
    """The last checkpoint's value of every seed at one separation."""
    return [r["history"][-1][key] for r in sweep if r["separation"] == separation]


def test_well_separated_clusters_are_recovered_after_coarse_training(sweep: list[dict]) -> None:
    assert min(final(sweep, 8.0, "recovery_test")) > 0.95
    assert min(final(sweep, 8.0, "recovery_train")) > 0.95


def test_without_fine_structure_recovery_is_at_chance(sweep: list[dict]) -> None:
    assert max(final(sweep, 0.0, "recovery_test")) < 0.6
    assert max(r["input_recovery"] for r in sweep if r["separation"] == 0.0) < 0.6


def test_coarse_training_fits_and_collapses_the_coarse_classes(sweep: list[dict]) -> None:
    for run in sweep:
        first, last = run["history"][0], run["history"][-1]
        assert last["coarse_train_acc"] == 1.0
        assert last["nc1_coarse"] < first["nc1_coarse"]


def test_fine_nc1_is_small_only_when_the_fine_clusters_are_apart(sweep: list[dict]) -> None:
    assert max(final(sweep, 8.0, "nc1_fine")) < 0.5 < min(final(sweep, 0.0, "nc1_fine"))


def test_summary_spreads_over_seeds(sweep: list[dict]) -> None:
    rows = summarise_sweep(sweep)
    assert [r["separation"] for r in rows] == [0.0, 8.0] and rows[0]["seeds"] == 2
    values = final(sweep, 8.0, "recovery_test")
    stats = rows[1]["final_recovery_test"]
    assert math.isclose(stats["mean"], np.mean(values)) and stats["min"] == min(values)
    assert math.isclose(stats["sd"], np.std(values, ddof=1))


def test_sweep_refuses_empty_or_negative_input() -> None:
    with pytest.raises(ValueError, match="separations"):
        separation_sweep([], [0])
    with pytest.raises(ValueError, match="separations"):
        separation_sweep([-1.0], [0])
