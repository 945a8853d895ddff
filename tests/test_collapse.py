"""Tests of nbutils.collapse against answers known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nbutils.collapse import (
    NC_HEAD_METRIC_KEYS,
    NC_METRIC_KEYS,
    ClassMoments,
    collapse_report,
    fine_structure,
    nc1,
    nc_metrics,
    ncc_mismatch,
)


def _simplex_etf(k: int, dim: int, seed: int = 0) -> np.ndarray:
    """K rows forming a unit simplex ETF centred at 0, randomly rotated into R^dim."""
    rng = np.random.default_rng(seed)
    etf = np.zeros((k, dim))
    etf[:, :k] = (np.eye(k) - 1.0 / k) * math.sqrt(k / (k - 1))
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return etf @ rotation


def _star(centres: np.ndarray, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Points centre +- spread * e_j for every coordinate j: class means and scatter are exact."""
    k, dim = centres.shape
    offsets = spread * np.concatenate([np.eye(dim), -np.eye(dim)])
    features = (centres[:, None, :] + offsets[None]).reshape(-1, dim)
    return features, np.repeat(np.arange(k), 2 * dim)


def _two_pass(features: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Reference per-class counts, means and centred scatter in plain numpy float64."""
    counts = np.bincount(labels, minlength=k).astype(float)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(k)])
    scatter = np.stack(
        [
            (features[labels == c] - means[c]).T @ (features[labels == c] - means[c])
            for c in range(k)
        ]
    )
    return counts, means, scatter


def _assert_moments(moments: ClassMoments, expected: tuple[np.ndarray, ...]) -> None:
    """Compare moments with (counts, means, scatter) to 1e-9 relative."""
    for got, want in zip((moments.counts, moments.means, moments.scatter), expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_perfect_collapse_gives_zero_nc1_nc3_nc4():
    means = 3.0 * _simplex_etf(4, 6)
    labels = np.tile(np.arange(4), 5)
    features = means[labels]
    moments = ClassMoments.from_arrays(features, labels, 4)
    metrics = nc_metrics(moments, head_weight=means, head_bias=np.zeros(4))
    assert abs(metrics["nc1"]) < 1e-12
    assert abs(metrics["nc3"]) < 1e-12
    assert ncc_mismatch(features, moments.means, means, np.zeros(4)) == 0.0


def test_head_equivalent_to_ncc_never_disagrees():
    rng = np.random.default_rng(1)
    means = rng.normal(size=(5, 3)) + 100.0
    features = rng.normal(size=(300, 3)) * 2.0 + 100.0
    bias = -0.5 * (means**2).sum(axis=1)
    assert ncc_mismatch(features, means, means, bias, batch_size=64) == 0.0


def test_simplex_etf_has_zero_nc2():
    labels = np.repeat(np.arange(4), 3)
    features = 5.0 * _simplex_etf(4, 6)[labels] + 7.0
    metrics = nc_metrics(ClassMoments.from_arrays(features, labels, 4))
    for key in ("nc2_equinorm", "nc2_equiangular", "nc2_etf_distance"):
        assert abs(metrics[key]) < 1e-10, key


def test_non_etf_nc2_matches_hand_computation():
    # centred means e1, -e1, 2e2, -2e2: norms 1,1,2,2; cosines -1 (twice) and 0 (four times)
    centred = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 2, 0], [0, -2, 0]])
    labels = np.repeat(np.arange(4), 2)
    metrics = nc_metrics(ClassMoments.from_arrays(centred[labels] + 3.0, labels, 4))
    assert metrics["nc2_equinorm"] == pytest.approx(math.sqrt(1 / 3) / 1.5, abs=1e-12)
    assert metrics["nc2_equiangular"] == pytest.approx((2 * 2 / 3 + 4 * 1 / 3) / 6, abs=1e-12)
    # ||G/|G| - T||^2 = 2 - 2 tr(G) / (|G| sqrt(K-1)) since G 1 = 0; tr G = 10, |G| = sqrt(68)
    assert metrics["nc2_etf_distance"] == pytest.approx(
        math.sqrt(2 - 20 / math.sqrt(68 * 3)), abs=1e-12
    )


def test_nc3_and_head_equinorm_by_hand():
    centred = np.array([[1.0, 0], [-1, 0]])
    labels = np.array([0, 1])
    weight = np.array([[0.0, 1], [0, 2]])
    metrics = nc_metrics(ClassMoments.from_arrays(centred[labels], labels, 2), weight)
    assert metrics["nc2_equinorm_head"] == pytest.approx(math.sqrt(0.5) / 1.5, abs=1e-12)
    # W/|W| = (0, 1; 0, 2)/sqrt5, M/|M| = (1, 0; -1, 0)/sqrt2: orthogonal unit matrices
    assert metrics["nc3"] == pytest.approx(math.sqrt(2), abs=1e-12)


@pytest.mark.parametrize("dim", [1, 3, 6])
def test_two_class_star_nc1_closed_form(dim):
    m, s = 2.5, 0.7
    centres = np.zeros((2, dim))
    centres[:, 0] = [m, -m]
    features, labels = _star(centres, s)
    moments = ClassMoments.from_arrays(features, labels, 2)
    np.testing.assert_allclose(moments.within_cov().numpy(), s**2 / dim * np.eye(dim), atol=1e-14)
    expected = s**2 / (dim * m**2)
    metrics = nc_metrics(moments)
    assert metrics["nc1_unnormalised"] == pytest.approx(expected, rel=1e-10)
    assert metrics["nc1"] == pytest.approx(expected / 2, rel=1e-10)
    assert nc1(torch.from_numpy(features), torch.from_numpy(labels)) == pytest.approx(
        expected / 2, rel=1e-10
    )


def test_nc1_ignores_null_directions_of_sigma_b():
    # three collinear means: Sigma_B has rank 1 < K-1, its round-off eigenvalue must not count
    direction = np.random.default_rng(5).normal(size=3)
    centres = np.outer([-1.0, 0, 1], direction / np.linalg.norm(direction))
    features, labels = _star(centres, 0.5)
    expected = (0.25 / 3) / (2 / 3)
    assert nc1(features, labels) == pytest.approx(expected / 3, rel=1e-10)


@pytest.fixture(scope="module")
def offset_data() -> tuple[np.ndarray, np.ndarray]:
    """Collapsed-ish features with a large common offset; class 3 only in the second half."""
    rng = np.random.default_rng(2)
    labels = np.concatenate([rng.integers(0, 3, 40), rng.integers(0, 4, 40)])
    features = rng.normal(size=(80, 5)) + 1e5 + rng.normal(size=(4, 5))[labels] * 10.0
    return features, labels


@pytest.mark.parametrize("batch_size", [1, 7, 80])
def test_streaming_matches_two_pass(offset_data, batch_size):
    features, labels = offset_data
    moments = ClassMoments.from_arrays(features, labels, 4, batch_size=batch_size)
    _assert_moments(moments, _two_pass(features, labels, 4))


def test_streaming_accepts_torch_float32_batches(offset_data):
    features, labels = offset_data
    moments = ClassMoments(4, 5)
    features32 = torch.from_numpy(features - 1e5).float()
    moments.update(features32[:50], torch.from_numpy(labels[:50]))
    moments.update(features32[50:], torch.from_numpy(labels[50:]))
    _assert_moments(moments, _two_pass(features32.double().numpy(), labels, 4))


def test_merge_of_halves_equals_whole(offset_data):
    features, labels = offset_data
    first = ClassMoments.from_arrays(features[:40], labels[:40], 4, batch_size=16)
    second = ClassMoments.from_arrays(features[40:], labels[40:], 4)
    _assert_moments(first.merge(second), _two_pass(features, labels, 4))
    assert first.counts[3] == 0


def test_coarsen_equals_direct_coarse_moments(offset_data):
    features, labels = offset_data
    fine_to_coarse = np.array([1, 0, 1, 0])
    coarse = ClassMoments.from_arrays(features, labels, 4, batch_size=9).coarsen(fine_to_coarse)
    _assert_moments(coarse, _two_pass(features, fine_to_coarse[labels], 2))


def test_subset_keeps_requested_classes_in_order(offset_data):
    features, labels = offset_data
    moments = ClassMoments.from_arrays(features, labels, 4)
    sub = moments.subset([3, 1])
    torch.testing.assert_close(sub.means, moments.means[[3, 1]])
    torch.testing.assert_close(sub.scatter, moments.scatter[[3, 1]])


def test_between_cov_uses_unweighted_mean_of_means():
    features = np.array([[0.0], [0.0], [0.0], [4.0]])
    moments = ClassMoments.from_arrays(features, np.array([0, 0, 0, 1]), 2)
    assert moments.between_cov().item() == pytest.approx(4.0)


def test_fine_structure_closed_form():
    # super-class s: fine means c_s +- a_s e1, star spread s_s; fraction a^2 / (a^2 + s^2)
    dim, params = 3, [(2.0, 1.0), (0.5, 1.5)]
    centres = []
    for group, (a, _) in enumerate(params):
        centre = np.zeros(dim)
        centre[1] = 10.0 * group
        centres += [centre + [a, 0, 0], centre - [a, 0, 0]]
    parts = [_star(np.array(centres[2 * g : 2 * g + 2]), s) for g, (_, s) in enumerate(params)]
    features = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] + 2 * g for g, p in enumerate(parts)])
    result = fine_structure(ClassMoments.from_arrays(features, labels, 4), [0, 0, 1, 1])
    fractions = [a**2 / (a**2 + s**2) for a, s in params]
    nc1s = [s**2 / (dim * a**2) / 2 for a, s in params]
    np.testing.assert_allclose(result["fine_variance_fraction"], fractions, rtol=1e-10)
    np.testing.assert_allclose(result["nc1_within_superclass"], nc1s, rtol=1e-10)
    assert result["fine_variance_fraction_mean"] == pytest.approx(np.mean(fractions))
    assert result["nc1_within_superclass_mean"] == pytest.approx(np.mean(nc1s))


@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_ncc_mismatch_hand_case(batch_size):
    # NCC picks class 1 iff x > 2; the head (logits 3 and x) iff x > 3: (2, 3) disagrees
    x = np.array([-1.0, 0.5, 2.5, 2.9, 3.5, 5.0])
    features = np.stack([x, np.zeros_like(x)], axis=1)
    means = np.array([[0.0, 0], [4, 0]])
    weight, bias = np.array([[0.0, 0], [1, 0]]), np.array([3.0, 0])
    assert ncc_mismatch(features, means, weight, bias, batch_size) == pytest.approx(2 / 6)


def _report_inputs() -> tuple[np.ndarray, np.ndarray, list[int]]:
    rng = np.random.default_rng(3)
    labels = np.tile(np.arange(4), 10)
    features = rng.normal(size=(4, 6))[labels] * 3 + rng.normal(size=(40, 6))
    return features, labels, [0, 1, 0, 1]


@pytest.mark.parametrize("trained_on, k", [("coarse", 2), ("fine", 4)])
def test_collapse_report_structure(trained_on, k):
    features, labels, mapping = _report_inputs()
    head = np.random.default_rng(4).normal(size=(k, 6))
    report = collapse_report(features, labels, mapping, trained_on, head, np.zeros(k), 16)
    other = "fine" if trained_on == "coarse" else "coarse"
    assert set(report) == {"coarse", "fine", "fine_structure"}
    assert set(report[trained_on]) == {*NC_METRIC_KEYS, *NC_HEAD_METRIC_KEYS, "nc4"}
    assert set(report[other]) == set(NC_METRIC_KEYS)
    assert set(report["fine_structure"]) == {
        "nc1_within_superclass",
        "fine_variance_fraction",
        "nc1_within_superclass_mean",
        "fine_variance_fraction_mean",
    }
    assert len(report["fine_structure"]["fine_variance_fraction"]) == 2
    assert all(isinstance(v, float) for v in report[trained_on].values())
    assert 0.0 <= report[trained_on]["nc4"] <= 1.0


def test_collapse_report_without_head_and_torch_input():
    features, labels, mapping = _report_inputs()
    report = collapse_report(
        torch.from_numpy(features).float(),
        torch.from_numpy(labels),
        torch.tensor(mapping),
        "coarse",
    )
    assert set(report["coarse"]) == set(NC_METRIC_KEYS)
    direct = nc1(features, np.array(mapping)[labels])
    assert report["coarse"]["nc1"] == pytest.approx(direct, rel=1e-5)


@pytest.mark.parametrize(
    "change, name",
    [
        ({"trained_on": "foo"}, "trained_on"),
        ({"features": np.zeros(40)}, "features"),
        ({"fine_labels": np.zeros(39, dtype=int)}, "fine_labels"),
        ({"fine_labels": np.full(40, 4)}, "fine_labels"),
        ({"fine_to_coarse": [0, 1, 0]}, "fine_to_coarse"),
        ({"head_weight": np.zeros((3, 6))}, "head_weight"),
    ],
)
def test_collapse_report_rejects_bad_input(change, name):
    features, labels, mapping = _report_inputs()
    kwargs = {
        "features": features,
        "fine_labels": labels,
        "fine_to_coarse": mapping,
        "trained_on": "coarse",
        "head_weight": np.zeros((2, 6)),
    }
    with pytest.raises(ValueError, match=name):
        collapse_report(**{**kwargs, **change})
