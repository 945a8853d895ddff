"""Neural Collapse metrics NC1-NC4 and fine-structure indicators (docs/protocol.md, section 5).

All statistics are per-class moments accumulated batch by batch in float64, so a feature set
never has to be in memory at once. Conventions, chosen here and used by every metric:

- Sigma_W is the pooled within-class covariance, sum_k scatter_k / N (sample weighted).
- Sigma_B is the covariance of the class means around the *unweighted* mean of class means,
  (1/K) sum_k (mu_k - mu_bar)(mu_k - mu_bar)^T, as in Papyan, Han & Donoho (2020). NC2 and NC3
  use the same centred means M (rows mu_k - mu_bar), so the geometry ignores class sizes.
- NC1 = tr(Sigma_W Sigma_B^+) / K, with Sigma_B^+ built from the top K-1 eigenpairs only
  (Sigma_B has rank K-1); ``nc1_unnormalised`` is the same trace without / K.
- Coefficients of variation (NC2 equinorm) use the unbiased std (ddof=1), as Papyan et al.'s
  reference code does (``torch.std``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

Array = np.ndarray | torch.Tensor
LABEL_LEVELS = ("coarse", "fine")
NC_METRIC_KEYS = ("nc1", "nc1_unnormalised", "nc2_equinorm", "nc2_equiangular", "nc2_etf_distance")
NC_HEAD_METRIC_KEYS = ("nc2_equinorm_head", "nc3")


def _as_float64(x: Array, device: torch.device | str) -> torch.Tensor:
    """Return x as float64: a tensor stays on its own device, a numpy array goes to `device`."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(dtype=torch.float64)
    # np.array copies, so read-only inputs such as memory maps are safe to wrap
    return torch.from_numpy(np.array(x, dtype=np.float64)).to(device)


def _as_labels(y: Array, device: torch.device | str) -> torch.Tensor:
    """Return integer labels as an int64 tensor on `device`."""
    if isinstance(y, torch.Tensor):
        return y.detach().to(device=device, dtype=torch.int64)
    return torch.from_numpy(np.array(y, dtype=np.int64)).to(device)


def _device_of(x: Array) -> torch.device:
    """Device a computation on x should run on: the tensor's own, or the CPU for numpy."""
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def _check_features_labels(
    features: Array,
    labels: Array,
    num_classes: int,
    names: tuple[str, str, str] = ("features", "labels", "num_classes"),
) -> None:
    """Raise ValueError unless features is N x D and labels holds N ids in [0, num_classes)."""
    f_name, y_name, k_name = names
    if len(features.shape) != 2:
        raise ValueError(f"{f_name} must be 2-D (N x D), got shape {tuple(features.shape)}")
    if tuple(labels.shape) != (features.shape[0],):
        raise ValueError(
            f"{y_name} must be 1-D of length {features.shape[0]} (rows of {f_name}), "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.shape[0] and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{y_name} must lie in [0, {num_classes}) ({k_name}), "
            f"got range [{int(labels.min())}, {int(labels.max())}]"
        )


def _as_mapping(fine_to_coarse: Sequence[int] | Array, num_fine: int) -> np.ndarray:
    """Validate a fine -> super-class map of length num_fine and return it as int64 numpy."""
    if isinstance(fine_to_coarse, torch.Tensor):
        fine_to_coarse = fine_to_coarse.cpu().numpy()
    groups = np.asarray(fine_to_coarse)
    if groups.shape != (num_fine,) or not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(
            f"fine_to_coarse must be {num_fine} integer super-class ids, "
            f"got shape {groups.shape} and dtype {groups.dtype}"
        )
    if groups.min() < 0:
        raise ValueError(f"fine_to_coarse must hold ids >= 0, got {groups.min()}")
    return groups.astype(np.int64)


def _outer(delta: torch.Tensor) -> torch.Tensor:
    """Row-wise outer products: (K, D) -> (K, D, D)."""
    return delta[:, :, None] * delta[:, None, :]


def _batch_moments(
    x: torch.Tensor, y: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact two-pass per-class counts, means and centred scatter of one in-memory batch."""
    counts = torch.bincount(y, minlength=num_classes)
    means = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device)
    scatter = torch.zeros(num_classes, x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
    # One gather into label order makes each class a contiguous block of a private copy, which
    # is then centred in place: no scatter-add for the means, no second gather of rows.
    blocks = torch.split(x[torch.argsort(y, stable=True)], counts.tolist())
    for k, block in enumerate(blocks):
        if block.shape[0]:
            means[k] = block.mean(dim=0)
            block.sub_(means[k])
            torch.mm(block.T, block, out=scatter[k])
    return counts.to(x.dtype), means, scatter


class ClassMoments:
    """Per-class counts, means and centred scatter matrices, accumulated in float64."""

    def __init__(self, num_classes: int, dim: int, device: torch.device | str = "cpu") -> None:
        """Start empty moments for num_classes classes of dim-dimensional features."""
        self.device = torch.device(device)
        kwargs = {"dtype": torch.float64, "device": self.device}
        self.counts = torch.zeros(num_classes, **kwargs)
        self.means = torch.zeros(num_classes, dim, **kwargs)
        self.scatter = torch.zeros(num_classes, dim, dim, **kwargs)

    @classmethod
    def _wrap(
        cls, counts: torch.Tensor, means: torch.Tensor, scatter: torch.Tensor
    ) -> ClassMoments:
        """Build moments around existing tensors without allocating empty ones first."""
        moments = cls.__new__(cls)
        moments.device = counts.device
        moments.counts, moments.means, moments.scatter = counts, means, scatter
        return moments

    @classmethod
    def from_arrays(
        cls, features: Array, labels: Array, num_classes: int, batch_size: int = 8192
    ) -> ClassMoments:
        """Accumulate moments over slices of features (N x D) and labels (N,)."""
        _check_features_labels(features, labels, num_classes)
        moments = cls(num_classes, features.shape[1], _device_of(features))
        for start in range(0, features.shape[0], batch_size):
            stop = start + batch_size
            moments.update(features[start:stop], labels[start:stop])
        return moments

    @property
    def num_classes(self) -> int:
        """Number of classes K."""
        return self.counts.shape[0]

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return self.means.shape[1]

    def update(self, features: Array, labels: Array) -> None:
        """Merge one batch into the running moments; classes absent from it are unchanged."""
        x = _as_float64(features, self.device)
        _check_features_labels(x, labels, self.num_classes)
        if x.shape[1] != self.dim:
            raise ValueError(f"features must have {self.dim} columns, got {x.shape[1]}")
        batch = _batch_moments(x, _as_labels(labels, x.device), self.num_classes)
        self._absorb(*(t.to(self.device) for t in batch))

    def _absorb(self, counts: torch.Tensor, means: torch.Tensor, scatter: torch.Tensor) -> None:
        """Combine other moments into these with Chan et al.'s pairwise formula.

        The naive E[xx^T] - mu mu^T update cancels catastrophically when features are collapsed
        around a large mean; merging centred scatters plus n_a n_b / n delta delta^T does not.
        """
        total = self.counts + counts
        weight = counts / total.clamp(min=1)
        delta = means - self.means
        self.scatter = (
            self.scatter + scatter + (self.counts * weight)[:, None, None] * _outer(delta)
        )
        self.means = self.means + weight[:, None] * delta
        self.counts = total

    def merge(self, other: ClassMoments) -> ClassMoments:
        """Return the moments of the union of the data behind self and other."""
        if (other.num_classes, other.dim) != (self.num_classes, self.dim):
            raise ValueError(
                f"other has {other.num_classes} classes x {other.dim} dims, "
                f"expected {self.num_classes} x {self.dim}"
            )
        merged = ClassMoments._wrap(self.counts.clone(), self.means.clone(), self.scatter.clone())
        merged._absorb(
            other.counts.to(self.device), other.means.to(self.device), other.scatter.to(self.device)
        )
        return merged

    def coarsen(self, fine_to_coarse: Sequence[int] | Array) -> ClassMoments:
        """Exact moments of super-classes, super-class g pooling the fine k with map[k] == g."""
        groups_np = _as_mapping(fine_to_coarse, self.num_classes)
        groups = torch.from_numpy(groups_np).to(self.device)
        num_groups = int(groups_np.max()) + 1
        kwargs = {"dtype": torch.float64, "device": self.device}
        counts = torch.zeros(num_groups, **kwargs).index_add_(0, groups, self.counts)
        weighted = torch.zeros(num_groups, self.dim, **kwargs)
        weighted.index_add_(0, groups, self.counts[:, None] * self.means)
        means = weighted / counts.clamp(min=1)[:, None]
        delta = self.means - means[groups]
        pooled = self.scatter + self.counts[:, None, None] * _outer(delta)
        scatter = torch.zeros(num_groups, self.dim, self.dim, **kwargs)
        return ClassMoments._wrap(counts, means, scatter.index_add_(0, groups, pooled))

    def subset(self, classes: Sequence[int] | Array) -> ClassMoments:
        """Moments of the given classes only, in the given order."""
        idx = torch.as_tensor(np.asarray(classes, dtype=np.int64), device=self.device)
        return ClassMoments._wrap(self.counts[idx], self.means[idx], self.scatter[idx])

    def centred_means(self) -> torch.Tensor:
        """Class means minus the unweighted mean of class means (K x D)."""
        return self.means - self.means.mean(dim=0)

    def within_cov(self) -> torch.Tensor:
        """Pooled within-class covariance Sigma_W = sum_k scatter_k / N."""
        return self.scatter.sum(dim=0) / self.counts.sum()

    def between_cov(self) -> torch.Tensor:
        """Sigma_B = (1/K) sum_k (mu_k - mu_bar)(mu_k - mu_bar)^T, mu_bar unweighted."""
        centred = self.centred_means()
        return centred.T @ centred / self.num_classes


def _require_populated(moments: ClassMoments) -> None:
    """Raise ValueError unless there are >= 2 classes and each has at least one sample."""
    if moments.num_classes < 2:
        raise ValueError(f"NC metrics need at least 2 classes, got {moments.num_classes}")
    empty = torch.nonzero(moments.counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"classes {empty} have no samples; NC metrics need every class")


def _nc1_unnormalised(moments: ClassMoments) -> float:
    """tr(Sigma_W Sigma_B^+) with Sigma_B^+ from the top K-1 eigenpairs of Sigma_B."""
    _require_populated(moments)
    k = moments.num_classes
    # Sigma_B = M^T M / K for the K x D centred means M, so its eigenpairs are the squared
    # singular values of M over K and M's right singular vectors: a K x D SVD replaces a D x D
    # eigendecomposition, which dominated the run time (and stalls on a busy CPU).
    _, singular, vh = torch.linalg.svd(moments.centred_means(), full_matrices=False)
    rank = min(k - 1, moments.dim)
    evals, evecs = singular[:rank] ** 2 / k, vh[:rank].T
    # means spanning fewer than K-1 directions leave round-off eigenvalues: a pinv drops them
    keep = evals > evals[0] * moments.dim * torch.finfo(torch.float64).eps
    if not bool(keep.any()):
        return math.nan
    evals, evecs = evals[keep], evecs[:, keep]
    projected = ((moments.within_cov() @ evecs) * evecs).sum(dim=0)
    return float((projected / evals).sum())


def _coefficient_of_variation(values: torch.Tensor) -> float:
    """std (ddof=1) / mean."""
    return float(values.std() / values.mean())


def _equiangularity(centred: torch.Tensor) -> float:
    """Mean over pairs k < l of |cos(M_k, M_l) + 1/(K-1)|."""
    k = centred.shape[0]
    unit = centred / centred.norm(dim=1, keepdim=True)
    rows, cols = torch.triu_indices(k, k, offset=1, device=centred.device)
    return float(((unit @ unit.T)[rows, cols] + 1.0 / (k - 1)).abs().mean())


def _etf_distance(centred: torch.Tensor) -> float:
    """Frobenius distance of M M^T / ||M M^T|| to the unit-norm simplex ETF Gram matrix."""
    k = centred.shape[0]
    gram = centred @ centred.T
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    etf = (eye - 1.0 / k) / math.sqrt(k - 1)
    return float((gram / gram.norm() - etf).norm())


def _head_tensors(
    head_weight: Array, head_bias: Array | None, num_classes: int, dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a linear head (K x D weight, K bias or None for zero) and return it in float64."""
    weight = _as_float64(head_weight, device).to(device)
    if tuple(weight.shape) != (num_classes, dim):
        raise ValueError(
            f"head_weight must have shape ({num_classes}, {dim}), got {tuple(weight.shape)}"
        )
    if head_bias is None:
        return weight, torch.zeros(num_classes, dtype=torch.float64, device=device)
    bias = _as_float64(head_bias, device).to(device)
    if tuple(bias.shape) != (num_classes,):
        raise ValueError(f"head_bias must have shape ({num_classes},), got {tuple(bias.shape)}")
    return weight, bias


def nc_metrics(
    moments: ClassMoments, head_weight: Array | None = None, head_bias: Array | None = None
) -> dict[str, float]:
    """NC1 and NC2 of the class moments, plus head equinorm and NC3 when a head is given.

    head_bias is only validated: NC1-NC3 concern the weight alone (the bias enters NC4).
    """
    unnormalised = _nc1_unnormalised(moments)
    centred = moments.centred_means()
    metrics = {
        "nc1": unnormalised / moments.num_classes,
        "nc1_unnormalised": unnormalised,
        "nc2_equinorm": _coefficient_of_variation(centred.norm(dim=1)),
        "nc2_equiangular": _equiangularity(centred),
        "nc2_etf_distance": _etf_distance(centred),
    }
    if head_weight is not None:
        weight, _ = _head_tensors(
            head_weight, head_bias, moments.num_classes, moments.dim, moments.device
        )
        metrics["nc2_equinorm_head"] = _coefficient_of_variation(weight.norm(dim=1))
        metrics["nc3"] = float((weight / weight.norm() - centred / centred.norm()).norm())
    return metrics


def nc1(features: Array, labels: Array, num_classes: int | None = None) -> float:
    """NC1 = tr(Sigma_W Sigma_B^+) / K; K = labels.max() + 1 unless num_classes is given."""
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    return _nc1_unnormalised(ClassMoments.from_arrays(features, labels, k)) / k


def ncc_mismatch(
    features: Array,
    means: Array,
    head_weight: Array,
    head_bias: Array | None,
    batch_size: int = 8192,
) -> float:
    """NC4: fraction of samples where argmax(W h + b) differs from the nearest class mean."""
    if len(features.shape) != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be 2-D with rows, got shape {tuple(features.shape)}")
    device = _device_of(features)
    mu = _as_float64(means, device).to(device)
    weight, bias = _head_tensors(head_weight, head_bias, mu.shape[0], mu.shape[1], device)
    # argmin ||h - mu_k|| is translation invariant; centring avoids cancellation at large offsets
    origin = mu.mean(dim=0)
    mu_centred = mu - origin
    sq_norms = (mu_centred**2).sum(dim=1)
    disagreements = 0
    for start in range(0, features.shape[0], batch_size):
        h = _as_float64(features[start : start + batch_size], device)
        head = (h @ weight.T + bias).argmax(dim=1)
        nearest = (sq_norms - 2.0 * (h - origin) @ mu_centred.T).argmin(dim=1)
        disagreements += int((head != nearest).sum())
    return disagreements / features.shape[0]


def _fine_variance_fraction(moments: ClassMoments) -> float:
    """Share of the pooled scatter trace of these classes that lies between their means."""
    pooled_mean = (moments.counts[:, None] * moments.means).sum(dim=0) / moments.counts.sum()
    between = (moments.counts * ((moments.means - pooled_mean) ** 2).sum(dim=1)).sum()
    within = moments.scatter.diagonal(dim1=1, dim2=2).sum()
    return float(between / (between + within))


def fine_structure(
    fine_moments: ClassMoments, fine_to_coarse: Sequence[int] | Array
) -> dict[str, list[float] | float]:
    """Per super-class NC1 of its fine classes and the between-fine share of its variance.

    ``fine_variance_fraction`` weighs fine classes by their sample counts, i.e. it is
    sum_k n_k ||mu_k - mu_s||^2 / tr(scatter of s); a super-class with a single fine class
    gets NaN for NC1 (undefined) and 0 for the fraction.
    """
    groups = _as_mapping(fine_to_coarse, fine_moments.num_classes)
    nc1_within, fractions = [], []
    for group in range(int(groups.max()) + 1):
        members = fine_moments.subset(np.flatnonzero(groups == group))
        k = members.num_classes
        nc1_within.append(_nc1_unnormalised(members) / k if k >= 2 else math.nan)
        fractions.append(_fine_variance_fraction(members))
    return {
        "nc1_within_superclass": nc1_within,
        "fine_variance_fraction": fractions,
        "nc1_within_superclass_mean": float(np.mean(nc1_within)),
        "fine_variance_fraction_mean": float(np.mean(fractions)),
    }


def collapse_report(
    features: Array,
    fine_labels: Array,
    fine_to_coarse: Sequence[int] | Array,
    trained_on: str,
    head_weight: Array | None = None,
    head_bias: Array | None = None,
    batch_size: int = 8192,
) -> dict[str, dict]:
    """Every NC metric (docs/protocol.md, section 5) against coarse and fine labels.

    One streaming pass builds the fine moments (the coarse ones are derived exactly from them);
    one more batched pass computes NC4. The head, and with it ``nc3``, ``nc2_equinorm_head``
    and ``nc4``, belongs to the label set named by trained_on ("coarse" or "fine").
    """
    if trained_on not in LABEL_LEVELS:
        raise ValueError(f"trained_on must be one of {LABEL_LEVELS}, got {trained_on!r}")
    groups = _as_mapping(fine_to_coarse, len(fine_to_coarse))
    names = ("features", "fine_labels", "the length of fine_to_coarse")
    _check_features_labels(features, fine_labels, len(groups), names)
    fine = ClassMoments.from_arrays(features, fine_labels, len(groups), batch_size)
    levels = {"coarse": fine.coarsen(groups), "fine": fine}
    report: dict[str, dict] = {}
    for level, moments in levels.items():
        head = (head_weight, head_bias) if level == trained_on else (None, None)
        report[level] = nc_metrics(moments, *head)
    if head_weight is not None:
        report[trained_on]["nc4"] = ncc_mismatch(
            features, levels[trained_on].means, head_weight, head_bias, batch_size
        )
    report["fine_structure"] = fine_structure(fine, groups)
    return report
