"""Recovering fine labels from coarse-trained features (`docs/protocol.md` section 4).

Per super-class k-means on train features, Hungarian matching of clusters to fine classes,
nearest-centroid labelling of test images inside the true (a) or the predicted (b) super-class,
the transductive variants that cluster the test set itself inside the true (c) or the predicted
(d) super-class, NMI/ARI, per-super-class accuracies and a linear probe on the reconstructed
labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from nbutils import checks
from nbutils.checks import FEATURE_NORMS
from nbutils.kmeans import kmeans

METRIC_KEYS = (
    "train_cluster_acc",
    "test_acc_true_coarse",
    "test_acc_pred_coarse",
    "test_cluster_acc_true_coarse",
    "test_cluster_acc_pred_coarse",
    "nmi",
    "nmi_within_superclass",
    "ari",
    "linear_probe_test_acc",
    "per_superclass",
    "per_superclass_train",
)
_EPS = 1e-12


@dataclass
class Recovery:
    """Result of `recover_fine_labels`: metrics plus the reconstructed labels and centroids.

    `centroids[s]` has one row per fine class of super-class s, in ascending fine-label order
    (row j is the centroid matched to the j-th smallest fine label of s), in the normalised
    feature space that k-means saw. `test_cluster_true_coarse` and `test_cluster_pred_coarse`
    are the test labels of the transductive variants (c) and (d).
    """

    metrics: dict
    train_reconstructed: np.ndarray
    test_pred_true_coarse: np.ndarray
    test_pred_pred_coarse: np.ndarray | None
    centroids: list[np.ndarray]
    test_cluster_true_coarse: np.ndarray
    test_cluster_pred_coarse: np.ndarray | None


def _contingency(a: np.ndarray, b: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    """Counts of (a, b) pairs as an n_a x n_b table; a and b are 0-based codes."""
    return np.bincount(a * n_b + b, minlength=n_a * n_b).reshape(n_a, n_b)


def _check_same_length(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    """Raise ValueError unless a and b are 1-D arrays of the same length."""
    if a.ndim != 1 or b.ndim != 1 or len(a) != len(b):
        raise ValueError(
            f"{name_a} and {name_b} must be 1-D arrays of the same length, "
            f"got shapes {a.shape} and {b.shape}"
        )


def cluster_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Best accuracy over one-to-one matchings of predicted cluster ids to true labels."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    _check_same_length("y_true", y_true, "y_pred", y_pred)
    if len(y_true) == 0:
        raise ValueError("y_true must not be empty")
    true_ids, t = np.unique(y_true, return_inverse=True)
    pred_ids, p = np.unique(y_pred, return_inverse=True)
    table = _contingency(t.ravel(), p.ravel(), len(true_ids), len(pred_ids))
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(y_true))


def match_clusters(
    y_true: np.ndarray, clusters: np.ndarray, n_clusters: int, candidate_labels: np.ndarray
) -> np.ndarray:
    """Hungarian map cluster id -> candidate label maximising agreement with y_true.

    With more clusters than candidates the clusters left unmatched take the candidate they
    overlap most (ties: the earlier candidate); samples whose y_true is not a candidate are ignored.
    """
    y_true, clusters = np.asarray(y_true), np.asarray(clusters)
    candidates = np.asarray(candidate_labels)
    _check_same_length("y_true", y_true, "clusters", clusters)
    if candidates.ndim != 1 or candidates.size == 0 or np.unique(candidates).size < candidates.size:
        raise ValueError("candidate_labels must be a non-empty 1-D array of distinct labels")
    n_clusters = checks.integer("n_clusters", n_clusters, least=1)
    if len(clusters) and (clusters.min() < 0 or clusters.max() >= n_clusters):
        raise ValueError(f"clusters must lie in 0..n_clusters-1 = 0..{n_clusters - 1}")
    order = np.argsort(candidates, kind="stable")
    pos = np.searchsorted(candidates[order], y_true).clip(max=len(candidates) - 1)
    known = candidates[order][pos] == y_true
    table = _contingency(clusters[known], order[pos[known]], n_clusters, len(candidates))
    mapping = candidates[table.argmax(axis=1)]
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping[rows] = candidates[cols]
    return mapping


def _check_feature_norm(method: str) -> None:
    """Raise ValueError unless method is one of FEATURE_NORMS."""
    if method not in FEATURE_NORMS:
        raise ValueError(f"feature_norm must be one of {FEATURE_NORMS}, got {method!r}")


def _l2_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS).astype(x.dtype)


def normalize_features(
    train: np.ndarray, test: np.ndarray, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Normalise train and test features with statistics computed on train only."""
    _check_feature_norm(method)
    train, test = np.asarray(train), np.asarray(test)
    if method == "none":
        return train, test
    if method == "l2":
        return _l2_rows(train), _l2_rows(test)
    # Moments in float64 so that float32 features with a large offset keep their precision.
    mean = train.mean(axis=0, dtype=np.float64).astype(train.dtype)
    if method == "center_l2":
        return _l2_rows(train - mean), _l2_rows(test - mean)
    std = train.std(axis=0, dtype=np.float64)
    std = np.where(std > _EPS, std, 1.0).astype(train.dtype)
    return (train - mean) / std, (test - mean) / std


def _check_features(name: str, x: np.ndarray) -> np.ndarray:
    """A 2-D, non-empty, finite float feature array, or ValueError naming `name`."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a non-empty 2-D float array, got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return x


def _check_labels(name: str, y: np.ndarray, n: int, num: int, what: str) -> np.ndarray:
    """A 1-D integer label array of length n with values in 0..num-1, or ValueError."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D int array of length {n}, got {y.dtype} {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= num):
        raise ValueError(
            f"{name} must lie in 0..{num - 1} ({what}), got values in {y.min()}..{y.max()}"
        )
    return y.astype(np.int64, copy=False)


def _check_fine_to_coarse(fine_to_coarse: np.ndarray) -> np.ndarray:
    """A 1-D integer map fine -> super-class that uses every id 0..G-1, or ValueError."""
    f2c = np.asarray(fine_to_coarse)
    if f2c.ndim != 1 or len(f2c) == 0 or not np.issubdtype(f2c.dtype, np.integer):
        raise ValueError(f"fine_to_coarse must be a non-empty 1-D int array, got {f2c.shape}")
    if f2c.min() < 0 or len(np.unique(f2c)) != f2c.max() + 1:
        raise ValueError(
            f"fine_to_coarse must use every super-class id 0..G-1 exactly, got ids {np.unique(f2c)}"
        )
    return f2c.astype(np.int64, copy=False)


def group_accuracy(correct: np.ndarray, groups: np.ndarray, n_groups: int) -> list[float | None]:
    """Accuracy within each group; None for a group with no samples."""
    hits = np.bincount(groups, weights=correct, minlength=n_groups)
    counts = np.bincount(groups, minlength=n_groups)
    return [float(h / c) if c else None for h, c in zip(hits, counts, strict=True)]


def _accuracy(pred: np.ndarray | None, true: np.ndarray) -> float | None:
    """Fraction of pred equal to true; None when there is no prediction."""
    return None if pred is None else float(np.mean(pred == true))


def within_group_nmi(true: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> float:
    """Mean over groups of the NMI of two labellings restricted to each group.

    Unlike the NMI over all labels, it does not credit the super-class, which is given: two
    fine classes that k-means cannot tell apart score 0, not about 0.7.
    """
    scores = [normalized_mutual_info_score(true[groups == g], pred[groups == g])
              for g in np.unique(groups)]
    return float(np.mean(scores))


def _nearest_fine(
    x: np.ndarray, groups: np.ndarray, centroids: list[np.ndarray], fine_of: list[np.ndarray]
) -> np.ndarray:
    """Fine label of the nearest centroid among the centroids of each sample's group."""
    out = np.empty(len(x), dtype=np.int64)
    for s, (c, fine) in enumerate(zip(centroids, fine_of, strict=True)):
        idx = np.flatnonzero(groups == s)
        c64 = c.astype(np.float64)
        # ||x||^2 is the same for every centroid, so it drops out of the argmin.
        scores = x[idx].astype(np.float64) @ c64.T * -2.0 + (c64 * c64).sum(axis=1)
        out[idx] = fine[scores.argmin(axis=1)]
    return out


def _kmeans_superclass(
    x: np.ndarray, fine_true: np.ndarray, fine: np.ndarray, n_init: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """k-means on one super-class; reconstructed labels and centroids ordered like `fine`."""
    labels, found = kmeans(x, len(fine), n_init, seed)
    mapping = match_clusters(fine_true, labels, len(fine), fine)
    centroids = np.empty_like(found)
    centroids[np.searchsorted(fine, mapping)] = found
    return mapping[labels], centroids


def _cluster_within(
    x: np.ndarray, fine_true: np.ndarray, groups: np.ndarray, fine_of: list[np.ndarray],
    n_init: int, seed: int,
) -> np.ndarray:
    """Fine labels from k-means inside each group of x, clusters matched on fine_true.

    A group with no more samples than its super-class has fine classes puts each sample in a
    cluster of its own (the zero-inertia clustering k-means would reach) before the matching.
    """
    out = np.empty(len(x), dtype=np.int64)
    for s, fine in enumerate(fine_of):
        idx = np.flatnonzero(groups == s)
        if len(idx) > len(fine):
            out[idx] = _kmeans_superclass(x[idx], fine_true[idx], fine, n_init, seed)[0]
        elif len(idx):
            singletons = np.arange(len(idx))
            out[idx] = match_clusters(fine_true[idx], singletons, len(idx), fine)
    return out


def recover_fine_labels(
    train_features: np.ndarray,
    train_fine: np.ndarray,
    test_features: np.ndarray,
    test_fine: np.ndarray,
    fine_to_coarse: np.ndarray,
    test_coarse_pred: np.ndarray | None = None,
    n_init: int = 10,
    seed: int = 0,
    feature_norm: str = "none",
    probe: bool = True,
) -> Recovery:
    """The recovery protocol of `docs/protocol.md` section 4, test variants (a)-(d).

    (a)/(b): per-super-class k-means on train, Hungarian matching to the train fine labels, then
    each test image takes the nearest matched centroid of its true (a) or predicted (b)
    super-class. (c)/(d), transductive: k-means (same normalisation, n_init and seed) on the
    test images of each true (c) or predicted (d) super-class, clusters matched to the test fine
    labels by the Hungarian method; both label every test image, and under (b)/(d) an image
    whose true fine class is outside its predicted super-class is necessarily wrong. Under
    (c)/(d) a super-class with no test images is skipped, and one with no more test images than
    fine classes gives each image its own cluster before the matching. (b) and (d) are None
    without `test_coarse_pred`. The linear probe is trained on the normalised train features
    with the reconstructed labels. A super-class with no samples in a split gets None in that
    split's per-super-class list.
    """
    train_features = _check_features("train_features", train_features)
    test_features = _check_features("test_features", test_features)
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError(
            f"test_features must have the same dimension as train_features "
            f"({train_features.shape[1]}), got {test_features.shape[1]}"
        )
    f2c = _check_fine_to_coarse(fine_to_coarse)
    n_fine, n_coarse = len(f2c), int(f2c.max()) + 1
    covered = f"fine_to_coarse covers {n_fine} fine classes"
    train_fine = _check_labels("train_fine", train_fine, len(train_features), n_fine, covered)
    test_fine = _check_labels("test_fine", test_fine, len(test_features), n_fine, covered)
    if test_coarse_pred is not None:
        test_coarse_pred = _check_labels(
            "test_coarse_pred", test_coarse_pred, len(test_features), n_coarse,
            f"fine_to_coarse has {n_coarse} super-classes",
        )
    n_init = checks.integer("n_init", n_init, least=1)
    seed = checks.integer("seed", seed, least=0)
    _check_feature_norm(feature_norm)
    if not isinstance(probe, (bool, np.bool_)):
        raise ValueError(f"probe must be a bool, got {probe!r}")
    fine_of = [np.flatnonzero(f2c == s) for s in range(n_coarse)]
    train_coarse, test_coarse = f2c[train_fine], f2c[test_fine]
    sizes = np.bincount(train_coarse, minlength=n_coarse)
    short = [s for s in range(n_coarse) if sizes[s] < len(fine_of[s])]
    if short:
        raise ValueError(
            f"train_fine needs at least as many samples per super-class as it has fine classes; "
            f"super-classes {short} have too few"
        )

    train_x, test_x = normalize_features(train_features, test_features, feature_norm)
    train_rec = np.empty(len(train_x), dtype=np.int64)
    centroids = []
    for s, fine in enumerate(fine_of):
        idx = np.flatnonzero(train_coarse == s)
        train_rec[idx], c = _kmeans_superclass(train_x[idx], train_fine[idx], fine, n_init, seed)
        centroids.append(c)
    pred_a = _nearest_fine(test_x, test_coarse, centroids, fine_of)
    pred_b = None if test_coarse_pred is None else _nearest_fine(
        test_x, test_coarse_pred, centroids, fine_of
    )
    clu_c = _cluster_within(test_x, test_fine, test_coarse, fine_of, n_init, seed)
    clu_d = None if test_coarse_pred is None else _cluster_within(
        test_x, test_fine, test_coarse_pred, fine_of, n_init, seed
    )
    probe_acc = None
    if probe:
        probe_acc = linear_probe(train_x, train_rec, test_x, test_fine, n_fine, seed=seed)

    metrics = {
        "train_cluster_acc": float(np.mean(train_rec == train_fine)),
        "test_acc_true_coarse": _accuracy(pred_a, test_fine),
        "test_acc_pred_coarse": _accuracy(pred_b, test_fine),
        "test_cluster_acc_true_coarse": _accuracy(clu_c, test_fine),
        "test_cluster_acc_pred_coarse": _accuracy(clu_d, test_fine),
        "nmi": float(normalized_mutual_info_score(train_fine, train_rec)),
        "nmi_within_superclass": within_group_nmi(train_fine, train_rec, train_coarse),
        # ARI can dip below 0 for worse-than-chance labellings; clip to keep metrics in [0, 1].
        "ari": float(max(adjusted_rand_score(train_fine, train_rec), 0.0)),
        "linear_probe_test_acc": probe_acc,
        "per_superclass": group_accuracy(pred_a == test_fine, test_coarse, n_coarse),
        "per_superclass_train": group_accuracy(train_rec == train_fine, train_coarse, n_coarse),
    }
    return Recovery(metrics, train_rec, pred_a, pred_b, centroids, clu_c, clu_d)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int | None = None,
    seed: int = 0,
    weight_decay: float = 1e-4,
    max_iter: int = 100,
) -> float:
    """Test accuracy of L2-regularised multinomial logistic regression (full-batch LBFGS).

    Features are standardised with train statistics; the loss is mean cross-entropy plus
    weight_decay / 2 * ||W||^2 (bias not penalised). The problem is convex, so `seed` only sets
    the small random starting point, drawn from a local torch.Generator.
    """
    train_x = _check_features("train_x", train_x)
    test_x = _check_features("test_x", test_x)
    if test_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"test_x must have {train_x.shape[1]} columns, got {test_x.shape[1]}")
    seen = max(int(np.max(train_y, initial=0)), int(np.max(test_y, initial=0))) + 1
    n_classes = seen if num_classes is None else checks.integer("num_classes", num_classes, least=1)
    train_y = _check_labels("train_y", train_y, len(train_x), n_classes, "num_classes")
    test_y = _check_labels("test_y", test_y, len(test_x), n_classes, "num_classes")
    seed = checks.integer("seed", seed, least=0)
    max_iter = checks.integer("max_iter", max_iter, least=1)
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")

    x = torch.as_tensor(np.asarray(train_x, dtype=np.float32))
    mean, std = x.mean(dim=0), x.std(dim=0)
    std = torch.where(std > _EPS, std, torch.ones_like(std))
    x = (x - mean) / std
    y = torch.as_tensor(train_y)
    gen = torch.Generator().manual_seed(seed)
    # (classes x features) layout: the weight gradient is then g.T @ x, which torch's CPU matmul
    # runs about 10x faster than the x.T @ g that a (features x classes) weight needs.
    w = (0.01 * torch.randn(n_classes, x.shape[1], generator=gen)).requires_grad_()
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        """Full-batch regularised loss with gradients."""
        opt.zero_grad()
        loss = F.cross_entropy(F.linear(x, w, b), y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        xt = (torch.as_tensor(np.asarray(test_x, dtype=np.float32)) - mean) / std
        pred = F.linear(xt, w, b).argmax(dim=1).numpy()
    return float(np.mean(pred == test_y))


def _check_images(name: str, images: np.ndarray) -> np.ndarray:
    """A non-empty uint8 N x H x W x 3 array, or ValueError naming `name`."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(
            f"{name} must be a non-empty uint8 array N x H x W x 3, got {images.dtype} "
            f"{images.shape}"
        )
    return images


def raw_pixel_features(images: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Raw-pixel control: uint8 N x H x W x 3 images -> float32 N x (H*W*3) features.

    Pixels are scaled to [0, 1] and centred per channel with the channel means of `reference`
    (pass the train images when featurising the test set, so that both splits share the train
    statistics like every other normalisation here; default: `images` itself). Rows keep the
    HWC order.
    """
    images = _check_images("images", images)
    reference = images if reference is None else _check_images("reference", reference)
    x = images.astype(np.float32)
    x *= np.float32(1 / 255)
    x -= reference.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32) / np.float32(255)
    return x.reshape(len(images), -1)


# Which chance level each recovery number is read against (see `chance_levels`).
CHANCE_OF = {
    "train_cluster_acc": "within_superclass_train",
    "test_acc_true_coarse": "within_superclass_test",
    "test_cluster_acc_true_coarse": "within_superclass_test",
    "linear_probe_test_acc": "within_superclass_test",
    "test_acc_pred_coarse": "within_predicted_superclass_test",
    "test_cluster_acc_pred_coarse": "within_predicted_superclass_test",
    "nmi": "nmi",
    "ari": "ari",
    "nmi_within_superclass": "nmi_within_superclass",
}


def _entropy(p: np.ndarray) -> float:
    """Shannon entropy (nats) of a probability vector."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def chance_levels(
    train_fine: np.ndarray, test_fine: np.ndarray, f2c: np.ndarray,
    test_coarse_pred: np.ndarray | None,
) -> dict[str, Any]:
    """What a labelling that knows the super-class but nothing finer scores (0-based ids).

    Such a labeller picks a fine class uniformly among the m_s of its super-class s, so it is
    right with probability 1/m_s (1 for a one-class super-class: trivially exact).
    - within_superclass_train / _test: mean over the train / test images of 1/m_s, the chance
      of train clustering, of (a) and (c), and of the linear probe (which can at best learn the
      super-class from uninformative features). Hungarian matching on the same labels puts a
      structureless clustering slightly above it on finite samples.
    - within_predicted_superclass_test: mean over test images of [predicted s is right] / m_s
      for the predicted s, the chance of (b) and (d) given the network's coarse predictions.
    - fine_uniform: 1/K, a 10-way guess with no information at all.
    - nmi, ari: the large-sample NMI (arithmetic mean) and ARI of such a labelling against the
      train fine labels; they credit the super-class, so they are well above 0.
    - nmi_within_superclass: 0, independent labels inside each super-class.
    """
    sizes = np.bincount(f2c)
    m_fine = sizes[f2c]
    p_fine = np.bincount(train_fine, minlength=len(f2c)) / len(train_fine)
    p_coarse = np.bincount(f2c, weights=p_fine, minlength=len(sizes))
    h_coarse = _entropy(p_coarse)
    h_fine_given = _entropy(p_fine) - h_coarse
    nmi = 2 * h_coarse / (2 * h_coarse + h_fine_given + float((p_coarse * np.log(sizes)).sum()))
    a, b = float((p_fine**2).sum()), float((p_coarse**2 / sizes).sum())
    ari = (float((p_fine**2 / m_fine).sum()) - a * b) / (0.5 * (a + b) - a * b)
    pred = None
    if test_coarse_pred is not None:
        hit = test_coarse_pred == f2c[test_fine]
        pred = float(np.mean(hit / sizes[test_coarse_pred]))
    return {
        "within_superclass_train": float(np.mean(1.0 / m_fine[train_fine])),
        "within_superclass_test": float(np.mean(1.0 / m_fine[test_fine])),
        "within_predicted_superclass_test": pred,
        "fine_uniform": 1.0 / len(f2c),
        "nmi": nmi,
        "ari": ari,
        "nmi_within_superclass": 0.0,
    }
