"""Tests for nbutils.recovery: matching, normalisation, the recovery protocol and the probe."""

from __future__ import annotations

import numpy as np
import pytest

from nbutils.recovery import (
    FEATURE_NORMS,
    METRIC_KEYS,
    cluster_accuracy,
    linear_probe,
    match_clusters,
    normalize_features,
    raw_pixel_features,
    recover_fine_labels,
    within_group_nmi,
)

MOD5 = np.arange(10) % 5


def mixture(
    fine_to_coarse: np.ndarray, n_per: int, seed: int, separated: bool = True, dim: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs per fine class; with separated=False the fine classes of a super-class
    share one distribution, so only the super-class is recoverable."""
    rng = np.random.default_rng(seed)
    centre_rng = np.random.default_rng(1234)
    coarse_centres = centre_rng.normal(scale=30.0, size=(fine_to_coarse.max() + 1, dim))
    fine_offsets = centre_rng.normal(scale=8.0, size=(len(fine_to_coarse), dim))
    centres = coarse_centres[fine_to_coarse] + (fine_offsets if separated else 0.0)
    labels = np.repeat(np.arange(len(fine_to_coarse)), n_per)
    x = centres[labels] + rng.normal(size=(len(labels), dim))
    return x.astype(np.float32), labels.astype(np.int64)


@pytest.fixture(scope="module")
def separated() -> dict:
    """Well separated 5 x 2 mixture, train and test."""
    xtr, ytr = mixture(MOD5, 60, seed=0)
    xte, yte = mixture(MOD5, 30, seed=1)
    return {"train_features": xtr, "train_fine": ytr, "test_features": xte, "test_fine": yte,
            "fine_to_coarse": MOD5}


def test_cluster_accuracy_permutation_is_one() -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 3])
    perm = np.array([2, 3, 0, 1])
    assert cluster_accuracy(y, perm[y]) == 1.0
    assert cluster_accuracy(y, perm[y] + 100) == 1.0


def test_cluster_accuracy_known_matching() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    y_pred = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    assert cluster_accuracy(y_true, y_pred) == 0.75


def test_cluster_accuracy_rectangular() -> None:
    y_true = np.array([0, 0, 1, 1])
    assert cluster_accuracy(y_true, np.array([0, 1, 2, 2])) == 0.75
    assert cluster_accuracy(y_true, np.zeros(4, dtype=np.int64)) == 0.5
    assert cluster_accuracy(np.array([0, 1, 2, 2]), np.array([5, 5, 7, 7])) == 0.75


def test_match_clusters_obvious_map() -> None:
    y_true = np.array([3, 3, 3, 8, 8, 8, 8])
    clusters = np.array([1, 1, 0, 0, 0, 0, 1])
    mapping = match_clusters(y_true, clusters, 2, np.array([3, 8]))
    np.testing.assert_array_equal(mapping, [8, 3])


def test_match_clusters_more_clusters_than_candidates() -> None:
    y_true = np.array([4, 4, 4, 6, 6, 6])
    clusters = np.array([0, 0, 2, 1, 1, 1])
    np.testing.assert_array_equal(match_clusters(y_true, clusters, 3, np.array([4, 6])), [4, 6, 4])


def test_normalize_features_uses_train_statistics() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(loc=5.0, scale=3.0, size=(200, 4)).astype(np.float32)
    test = rng.normal(loc=-5.0, scale=3.0, size=(50, 4)).astype(np.float32)
    tr, te = normalize_features(train, test, "standardize")
    np.testing.assert_allclose(tr.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(tr.std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(te, (test - train.mean(0)) / train.std(0), rtol=1e-4, atol=1e-4)
    tr, te = normalize_features(train, test, "center_l2")
    np.testing.assert_allclose(np.linalg.norm(te, axis=1), 1.0, rtol=1e-5)
    centred = test[0] - train.mean(axis=0)
    np.testing.assert_allclose(te[0], centred / np.linalg.norm(centred), rtol=1e-4)
    tr, _ = normalize_features(train, test, "l2")
    np.testing.assert_allclose(np.linalg.norm(tr, axis=1), 1.0, rtol=1e-5)
    assert tr.dtype == np.float32
    assert normalize_features(train, test, "none")[0] is train
    with pytest.raises(ValueError, match="feature_norm.*center_l2"):
        normalize_features(train, test, "zscore")


@pytest.mark.parametrize("norm", FEATURE_NORMS)
def test_recovery_separated_is_perfect(separated: dict, norm: str) -> None:
    test_coarse = MOD5[separated["test_fine"]]
    rec = recover_fine_labels(**separated, test_coarse_pred=test_coarse, n_init=3,
                              feature_norm=norm, probe=norm == "none")
    m = rec.metrics
    assert set(m) == set(METRIC_KEYS)
    assert m["train_cluster_acc"] == 1.0
    assert m["test_acc_true_coarse"] == 1.0
    assert m["test_acc_pred_coarse"] == 1.0
    assert m["test_cluster_acc_true_coarse"] == 1.0
    assert m["test_cluster_acc_pred_coarse"] == 1.0
    assert m["nmi"] > 0.999 and m["ari"] > 0.999 and m["nmi_within_superclass"] > 0.999
    assert m["per_superclass"] == [1.0] * 5 and m["per_superclass_train"] == [1.0] * 5
    assert (m["linear_probe_test_acc"] is None) == (norm != "none")
    for value in [v for v in m.values() if isinstance(v, float)]:
        assert type(value) is float and 0.0 <= value <= 1.0
    np.testing.assert_array_equal(rec.train_reconstructed, separated["train_fine"])
    np.testing.assert_array_equal(rec.test_pred_pred_coarse, separated["test_fine"])
    np.testing.assert_array_equal(rec.test_cluster_true_coarse, separated["test_fine"])
    np.testing.assert_array_equal(rec.test_cluster_pred_coarse, separated["test_fine"])
    assert [c.shape for c in rec.centroids] == [(2, 16)] * 5


def test_centroids_are_ordered_by_fine_label(separated: dict) -> None:
    rec = recover_fine_labels(**separated, n_init=2, probe=False)
    x, y = separated["train_features"], separated["train_fine"]
    for s, centroids in enumerate(rec.centroids):
        fine = np.flatnonzero(MOD5 == s)
        means = np.stack([x[y == f].mean(axis=0) for f in fine])
        np.testing.assert_allclose(centroids, means, rtol=1e-4, atol=1e-3)


def test_recovery_identical_fine_classes_is_near_chance() -> None:
    xtr, ytr = mixture(MOD5, 100, seed=0, separated=False)
    xte, yte = mixture(MOD5, 60, seed=1, separated=False)
    m = recover_fine_labels(xtr, ytr, xte, yte, MOD5, n_init=2, probe=False).metrics
    assert m["test_acc_pred_coarse"] is None
    assert m["test_cluster_acc_pred_coarse"] is None
    assert m["linear_probe_test_acc"] is None
    assert 0.5 <= m["train_cluster_acc"] < 0.65
    assert m["test_acc_true_coarse"] < 0.65
    # The reconstruction always gets the super-class right, worth log 5 / log 10 = 0.70 of NMI.
    assert 0.69 < m["nmi"] < 0.75
    # Inside a super-class there is nothing to find: the within-super-class NMI is about 0.
    assert m["nmi_within_superclass"] < 0.05


def test_within_group_nmi_closed_form() -> None:
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    true = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    # Group 0 found exactly (NMI 1); in group 1 the labelling is independent of the truth
    # (every cell of the 2 x 2 contingency table holds one sample: mutual information 0).
    pred = np.array([5, 5, 6, 6, 2, 3, 2, 3])
    assert within_group_nmi(true, pred, groups) == pytest.approx(0.5, abs=1e-12)
    assert within_group_nmi(true, true, groups) == pytest.approx(1.0, abs=1e-12)


def test_recovery_uneven_superclasses() -> None:
    f2c = np.array([0, 0, 0, 1, 1, 2])
    xtr, ytr = mixture(f2c, 40, seed=0)
    xte, yte = mixture(f2c, 20, seed=1)
    rec = recover_fine_labels(xtr, ytr, xte, yte, f2c, n_init=3, probe=False)
    assert rec.metrics["train_cluster_acc"] == 1.0
    assert rec.metrics["test_acc_true_coarse"] == 1.0
    assert [len(c) for c in rec.centroids] == [3, 2, 1]


def test_wrong_coarse_prediction_costs_exactly_those_points(separated: dict) -> None:
    test_coarse = MOD5[separated["test_fine"]].copy()
    wrong = np.arange(0, len(test_coarse), 10)
    test_coarse[wrong] = (test_coarse[wrong] + 1) % 5
    rec = recover_fine_labels(**separated, test_coarse_pred=test_coarse, n_init=2, probe=False)
    assert rec.metrics["test_acc_true_coarse"] == 1.0
    expected = 1.0 - len(wrong) / len(test_coarse)
    assert rec.metrics["test_acc_pred_coarse"] == pytest.approx(expected, abs=1e-12)
    assert np.all(MOD5[rec.test_pred_pred_coarse[wrong]] == test_coarse[wrong])


def test_transductive_true_coarse_on_the_train_set_repeats_the_train_clustering() -> None:
    x, y = mixture(MOD5, 60, seed=0, separated=False)
    rec = recover_fine_labels(x, y, x, y, MOD5, n_init=2, seed=1, probe=False)
    # Same points, normalisation, n_init and seed: k-means on "test" is the train k-means.
    np.testing.assert_array_equal(rec.test_cluster_true_coarse, rec.train_reconstructed)
    assert rec.metrics["test_cluster_acc_true_coarse"] == rec.metrics["train_cluster_acc"]
    assert rec.test_cluster_pred_coarse is None


def test_transductive_equals_inductive_on_separated_train_set(separated: dict) -> None:
    x, y = separated["train_features"], separated["train_fine"]
    m = recover_fine_labels(x, y, x, y, MOD5, n_init=2, probe=False).metrics
    assert m["test_cluster_acc_true_coarse"] == m["test_acc_true_coarse"] == 1.0


def test_transductive_wrong_coarse_prediction_costs_exactly_those_points(separated: dict) -> None:
    # The features and the predicted super-class stay those of each image's blob; one image in
    # ten gets a true fine label from another super-class, i.e. its super-class is mispredicted.
    test_fine = separated["test_fine"].copy()
    pred = MOD5[test_fine]
    wrong = np.arange(0, len(test_fine), 10)
    test_fine[wrong] = (test_fine[wrong] + 1) % 10
    rec = recover_fine_labels(**{**separated, "test_fine": test_fine}, test_coarse_pred=pred,
                              n_init=2, probe=False)
    expected = 1.0 - len(wrong) / len(test_fine)
    assert rec.metrics["test_cluster_acc_pred_coarse"] == pytest.approx(expected, abs=1e-12)
    assert rec.metrics["test_acc_pred_coarse"] == pytest.approx(expected, abs=1e-12)
    assert np.all(MOD5[rec.test_cluster_pred_coarse] == pred)
    right = np.setdiff1d(np.arange(len(test_fine)), wrong)
    np.testing.assert_array_equal(rec.test_cluster_pred_coarse[right], test_fine[right])


def test_transductive_small_and_empty_predicted_superclasses(separated: dict) -> None:
    test_fine = separated["test_fine"]
    pred = MOD5[test_fine].copy()
    pred[pred == 3] = 2
    lone = np.flatnonzero(pred == 4)[0]
    pred[pred == 4] = 1
    pred[lone] = 4
    rec = recover_fine_labels(**separated, test_coarse_pred=pred, n_init=2, probe=False)
    labels = rec.test_cluster_pred_coarse
    assert labels.shape == test_fine.shape and np.all(MOD5[labels] == pred)
    # A lone image forms its own cluster, which the matching names after its true class.
    assert labels[lone] == test_fine[lone]
    misrouted = MOD5[test_fine] != pred
    assert rec.metrics["test_cluster_acc_pred_coarse"] <= 1.0 - misrouted.mean()


def test_recovery_is_deterministic() -> None:
    xtr, ytr = mixture(MOD5, 40, seed=0, separated=False)
    xte, yte = mixture(MOD5, 20, seed=1, separated=False)
    first = recover_fine_labels(xtr, ytr, xte, yte, MOD5, n_init=2, seed=3)
    second = recover_fine_labels(xtr, ytr, xte, yte, MOD5, n_init=2, seed=3)
    assert first.metrics == second.metrics
    np.testing.assert_array_equal(first.train_reconstructed, second.train_reconstructed)


def test_linear_probe_separable_and_deterministic() -> None:
    xtr, ytr = mixture(np.arange(4), 50, seed=0)
    xte, yte = mixture(np.arange(4), 25, seed=1)
    first = linear_probe(xtr, ytr, xte, yte, seed=1)
    assert first == 1.0
    assert linear_probe(xtr, ytr, xte, yte, seed=1) == first
    assert linear_probe(xtr, ytr, xte, yte, num_classes=6, max_iter=20) == 1.0


def test_linear_probe_learns_a_linear_rule() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 3] > 0).astype(np.int64)
    assert linear_probe(x[:400], y[:400], x[400:], y[400:]) > 0.95


def test_raw_pixel_features() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    feats = raw_pixel_features(images)
    assert feats.shape == (6, 3072) and feats.dtype == np.float32
    np.testing.assert_allclose(feats.reshape(-1, 3).mean(axis=0), 0.0, atol=1e-5)
    expected = images[1, 2, 3] / 255.0 - images.reshape(-1, 3).mean(axis=0) / 255.0
    np.testing.assert_allclose(feats[1].reshape(32, 32, 3)[2, 3], expected, atol=1e-6)
    with pytest.raises(ValueError, match="images"):
        raw_pixel_features(images.astype(np.float32))


def test_raw_pixel_features_centred_with_reference_means() -> None:
    rng = np.random.default_rng(1)
    train = rng.integers(0, 128, size=(8, 4, 4, 3), dtype=np.uint8)
    test = rng.integers(128, 256, size=(3, 4, 4, 3), dtype=np.uint8)
    feats = raw_pixel_features(test, reference=train)
    train_mean = train.reshape(-1, 3).mean(axis=0) / 255.0
    expected = test.reshape(3, -1, 3) / 255.0 - train_mean
    np.testing.assert_allclose(feats, expected.reshape(3, -1), atol=1e-6)
    # Centred by the train means, the brighter test set keeps its positive offset.
    assert np.all(feats.reshape(-1, 3).mean(axis=0) > 0.2)
    np.testing.assert_array_equal(raw_pixel_features(train, reference=train),
                                  raw_pixel_features(train))
    with pytest.raises(ValueError, match="reference"):
        raw_pixel_features(test, reference=train[..., :2])


def _bad(separated: dict, **changes: object) -> dict:
    """The separated fixture's arguments with some replaced."""
    return {**separated, "probe": False, "n_init": 1, **changes}


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"train_features": np.zeros((5, 16), dtype=np.float32)}, "train_fine"),
        ({"train_features": np.zeros(600, dtype=np.float32)}, "train_features"),
        ({"test_features": np.zeros((300, 15), dtype=np.float32)}, "test_features"),
        ({"train_fine": np.full(600, 10)}, "train_fine"),
        ({"test_fine": np.full(300, -1)}, "test_fine"),
        ({"test_fine": np.zeros(300)}, "test_fine"),
        ({"fine_to_coarse": np.arange(10) % 5 * 2}, "fine_to_coarse"),
        ({"fine_to_coarse": np.arange(8) % 4}, "train_fine"),
        ({"test_coarse_pred": np.full(300, 5)}, "test_coarse_pred"),
        ({"test_coarse_pred": np.zeros(299, dtype=np.int64)}, "test_coarse_pred"),
        ({"test_coarse_pred": np.zeros(300)}, "test_coarse_pred"),
        ({"test_coarse_pred": np.full(300, -1)}, "test_coarse_pred"),
        ({"n_init": 0}, "n_init"),
        ({"n_init": 2.5}, "n_init"),
        ({"seed": -1}, "seed"),
        ({"feature_norm": "zscore"}, "feature_norm"),
        ({"probe": "yes"}, "probe"),
    ],
)
def test_recover_validation_names_parameter(separated: dict, changes: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        recover_fine_labels(**_bad(separated, **changes))


def test_recover_validation_too_few_train_samples() -> None:
    f2c = np.array([0, 0, 0, 1])
    x = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="train_fine"):
        recover_fine_labels(x, np.array([0, 1, 3]), x, np.array([0, 1, 3]), f2c)


def test_nan_features_rejected(separated: dict) -> None:
    x = separated["test_features"].copy()
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="test_features"):
        recover_fine_labels(**_bad(separated, test_features=x))


def test_other_validation_errors() -> None:
    x = np.zeros((4, 2), dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="y_pred"):
        cluster_accuracy(y, y[:3])
    with pytest.raises(ValueError, match="n_clusters"):
        match_clusters(y, y, 0, np.array([0, 1]))
    with pytest.raises(ValueError, match="candidate_labels"):
        match_clusters(y, y, 2, np.array([0, 0]))
    with pytest.raises(ValueError, match="num_classes"):
        linear_probe(x, y, x, y, num_classes=1)
    with pytest.raises(ValueError, match="test_x"):
        linear_probe(x, y, np.zeros((4, 3), dtype=np.float32), y)
    with pytest.raises(ValueError, match="weight_decay"):
        linear_probe(x, y, x, y, weight_decay=-1.0)
