"""Tests for nbutils.kmeans: clustering of known mixtures, determinism, precision, validation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans

from nbutils.kmeans import kmeans


def blobs(k: int, n_per: int, seed: int, scale: float = 20.0, dim: int = 8) -> tuple:
    """k Gaussian blobs of n_per points with unit noise and centres `scale` apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=scale, size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return centres[labels] + rng.normal(size=(len(labels), dim)), labels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings split the points identically, up to renaming."""
    pairs = np.unique(np.stack([a, b]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def test_separated_blobs_are_found() -> None:
    x, y = blobs(4, 50, seed=0)
    labels, centroids = kmeans(x, 4, n_init=3, seed=0)
    assert labels.dtype == np.int64 and labels.shape == (200,)
    assert same_partition(labels, y)
    means = np.stack([x[labels == j].mean(axis=0) for j in range(4)])
    np.testing.assert_allclose(centroids, means, rtol=1e-10, atol=1e-10)


def test_agrees_with_scikit_learn_inertia() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6))
    labels, centroids = kmeans(x, 5, n_init=10, seed=0)
    ours = ((x - centroids[labels]) ** 2).sum()
    theirs = KMeans(5, n_init=10, random_state=0).fit(x).inertia_
    # Different random streams reach different local optima; both are good ones.
    assert ours == pytest.approx(theirs, rel=0.02)


def test_one_cluster_is_the_mean() -> None:
    x, _ = blobs(3, 10, seed=2)
    labels, centroids = kmeans(x, 1, n_init=2, seed=0)
    assert np.all(labels == 0)
    np.testing.assert_allclose(centroids[0], x.mean(axis=0), rtol=1e-12, atol=1e-12)


def test_duplicated_points_fill_every_cluster() -> None:
    x = np.repeat(np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]), 4, axis=0)
    labels, centroids = kmeans(x, 3, n_init=4, seed=1)
    assert same_partition(labels, np.repeat(np.arange(3), 4))
    np.testing.assert_allclose(np.sort(centroids, axis=0), np.sort(x[::4], axis=0))


def test_deterministic_and_precision_kept() -> None:
    x, _ = blobs(3, 40, seed=3, scale=1.0)
    first = kmeans(x.astype(np.float32), 3, n_init=3, seed=7)
    second = kmeans(x.astype(np.float32), 3, n_init=3, seed=7)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[1].dtype == np.float32
    assert kmeans(x, 3, n_init=1, seed=0)[1].dtype == np.float64


def test_far_offset_float32_features() -> None:
    x, y = blobs(2, 30, seed=4)
    labels, _ = kmeans((x + 1e4).astype(np.float32), 2, n_init=2, seed=0)
    assert same_partition(labels, y)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((np.zeros(10), 2, 1, 0), "x"),
        ((np.zeros((10, 2), dtype=np.int64), 2, 1, 0), "x"),
        ((np.full((10, 2), np.nan), 2, 1, 0), "x"),
        ((np.zeros((3, 2)), 4, 1, 0), "k"),
        ((np.zeros((3, 2)), 0, 1, 0), "k"),
        ((np.zeros((3, 2)), 2, 0, 0), "n_init"),
        ((np.zeros((3, 2)), 2, 1, -1), "seed"),
        ((np.zeros((3, 2)), 2, 1, 1.5), "seed"),
    ],
)
def test_validation_names_parameter(args: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}:? must"):
        kmeans(*args)
