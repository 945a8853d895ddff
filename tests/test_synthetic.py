"""The synthetic model: mixture geometry by construction, and its qualitative claims."""

from __future__ import annotations

import inspect
import itertools
import math

import numpy as np
import pytest
import torch

from nbutils.config import RunConfig
from nbutils.phase import terminal_phase
from nbutils.synthetic import (
    make_mixture,
    mixture_means,
    run_summary_row,
    separation_sweep,
    summarise_sweep,
    torch_threads,
    train_synthetic,
)

# A small version of the notebook's regime (many noise dimensions, a narrow hidden layer, centres
# 4 noise-std apart, lr 0.01), well under a second per training on one thread.
SMALL = {"n_per_cluster": 100, "num_coarse": 3, "dim": 256, "coarse_separation": 4.0}
TRAIN = {"hidden": 32, "epochs": 30, "lr": 0.01, "checkpoints": [0, 30], "n_init": 4}


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
    assert data.x_train.shape == (600, 256) and data.x_test.shape == (600, 256)
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
    ({"feature_norm": "cosine"}, "feature_norm"),
])
def test_bad_training_parameters_are_named(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        train_synthetic(make_mixture(1.0, **SMALL), **kwargs)


def test_recovery_defaults_to_the_cifar_runs_feature_norm() -> None:
    assert inspect.signature(train_synthetic).parameters["feature_norm"].default == "l2"
    assert RunConfig.feature_norm == "l2"


@pytest.fixture(scope="module")
def sweep() -> list[dict]:
    """Separations 0 (no fine structure) and 12 (far apart), two seeds each."""
    return separation_sweep([0.0, 12.0], [0, 1], SMALL, TRAIN)


def final(sweep: list[dict], separation: float, key: str) -> list[float]:
    """The last checkpoint's value of every seed at one separation."""
    return [r["history"][-1][key] for r in sweep if r["separation"] == separation]


def test_well_separated_clusters_are_recovered_after_coarse_training(sweep: list[dict]) -> None:
    assert min(final(sweep, 12.0, "recovery_test")) > 0.95
    assert min(final(sweep, 12.0, "recovery_train")) > 0.95


def test_without_fine_structure_recovery_is_at_chance(sweep: list[dict]) -> None:
    assert max(final(sweep, 0.0, "recovery_test")) < 0.6
    assert max(r["input_recovery"] for r in sweep if r["separation"] == 0.0) < 0.6


def test_the_hidden_layer_passes_through_collapse(sweep: list[dict]) -> None:
    for run in sweep:
        first, last = run["history"][0], run["history"][-1]
        assert last["coarse_train_acc"] == 1.0
        # Large at initialisation (the random layer mixes the noise dimensions into the class
        # means' directions), far above the raw inputs', and more than 10x smaller at the end.
        assert first["nc1_coarse"] > 1.0 > 4 * run["input_nc1_coarse"]
        assert first["nc1_coarse"] > 10 * last["nc1_coarse"]


def test_a_wide_random_layer_on_few_dimensions_starts_collapsed() -> None:
    """The former default's regime, where there was nothing left to collapse."""
    data = make_mixture(0.0, n_per_cluster=100, num_coarse=3, dim=16, coarse_separation=8.0)
    run = train_synthetic(data, hidden=64, epochs=1, n_init=2)
    assert run["history"][0]["nc1_coarse"] < 0.2


def test_every_run_records_its_terminal_phase(sweep: list[dict]) -> None:
    for run in sweep:
        accs, phase = run["train_acc"], run["terminal_phase"]
        assert len(accs) == TRAIN["epochs"] + 1
        assert accs[-1] == run["history"][-1]["coarse_train_acc"]
        assert phase == terminal_phase(list(range(TRAIN["epochs"] + 1)), accs)
        # Reached, after training began: at initialisation the accuracy is near chance.
        assert phase["reached"] and accs[0] < 0.6 and 0 < phase["onset_epoch"] <= 21
        row = run_summary_row(run)
        assert row["reached_terminal_phase"] and row["tpt_epoch"] == phase["onset_epoch"]


def test_a_run_that_does_not_fit_is_recorded_as_such() -> None:
    run = train_synthetic(make_mixture(0.0, **SMALL), hidden=8, epochs=2, lr=1e-6, n_init=2)
    phase = run["terminal_phase"]
    assert phase["reached"] is False and phase["onset_epoch"] is None
    assert run_summary_row({**run, "separation": 0.0, "seed": 0, "input_recovery": 0.5,
                    "input_nc1_coarse": 1.0})["reached_terminal_phase"] is False


def test_fine_nc1_is_small_only_when_the_fine_clusters_are_apart(sweep: list[dict]) -> None:
    assert max(final(sweep, 12.0, "nc1_fine")) < 0.5 < min(final(sweep, 0.0, "nc1_fine"))


def test_summary_spreads_over_seeds(sweep: list[dict]) -> None:
    rows = summarise_sweep(sweep)
    assert [r["separation"] for r in rows] == [0.0, 12.0] and rows[0]["seeds"] == 2
    values = final(sweep, 12.0, "recovery_test")
    stats = rows[1]["final_recovery_test"]
    assert math.isclose(stats["mean"], np.mean(values)) and stats["min"] == min(values)
    assert math.isclose(stats["sd"], np.std(values, ddof=1))
    assert rows[1]["terminal_phase_reached"] == 2 and rows[1]["tpt_epoch"]["n"] == 2


def test_sweep_refuses_empty_or_negative_input() -> None:
    with pytest.raises(ValueError, match="separations"):
        separation_sweep([], [0])
    with pytest.raises(ValueError, match="separations"):
        separation_sweep([-1.0], [0])
    with pytest.raises(ValueError, match="threads"):
        separation_sweep([1.0], [0], threads=0)


def test_torch_threads_are_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
