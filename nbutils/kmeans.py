"""k-means with k-means++ seeding and batched restarts, in torch on the CPU.

The semantics of scikit-learn's `KMeans` (greedy k-means++, Lloyd iterations, tolerance relative
to the mean feature variance, the restart of lowest inertia wins), with all `n_init` restarts
advancing together in single matrix products. The fine-label recovery of `nbutils.recovery`
(`docs/protocol.md` section 4) runs it once per super-class.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["kmeans"]


from nbutils import checks


def _sq_distances(x: torch.Tensor, x_sq: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (n x m) from the rows of x (norms x_sq) to the rows of c."""
    d = torch.addmm((c * c).sum(dim=1)[None, :], x, c.T, alpha=-2.0)
    return d.add_(x_sq[:, None]).clamp_(min=0)


def _kmeans_plusplus(
    x: torch.Tensor, x_sq: torch.Tensor, k: int, n_init: int, gen: torch.Generator
) -> torch.Tensor:
    """Greedy k-means++ seeds (n_init x k x D) of all restarts, by scikit-learn's procedure.

    Each new centre is the best, by resulting potential, of 2 + log(k) candidates sampled in
    proportion to the squared distance to the nearest centre so far.
    """
    n, trials, rows = len(x), 2 + int(math.log(k)), torch.arange(n_init)
    centres = x.new_empty(n_init, k, x.shape[1])
    centres[:, 0] = x[torch.randint(n, (n_init,), generator=gen)]
    closest = _sq_distances(x, x_sq, centres[:, 0]).T.double()
    potential = closest.sum(dim=1)
    for c in range(1, k):
        draws = torch.rand(n_init, trials, generator=gen, dtype=torch.float64)
        cand = torch.searchsorted(closest.cumsum(dim=1), draws * potential[:, None])
        cand = cand.clamp_(max=n - 1)
        dist = _sq_distances(x, x_sq, x[cand.flatten()]).T.reshape(n_init, trials, n).double()
        dist = torch.minimum(dist, closest[:, None, :])
        best = dist.sum(dim=2).argmin(dim=1)
        centres[:, c] = x[cand[rows, best]]
        closest = dist[rows, best]
        potential = closest.sum(dim=1)
    return centres


def _cluster_means(
    x: torch.Tensor, labels: torch.Tensor, far: torch.Tensor, k: int
) -> torch.Tensor:
    """Means (r x k x D) of r labellings (n x r); an empty cluster takes a far-off point instead.

    `far` (n x r) is each point's distance to its own centre: as in scikit-learn, the points
    farthest from their centres re-seed empty clusters.
    """
    r = labels.shape[1]
    onehot = x.new_zeros(len(x), r * k)
    onehot.scatter_(1, labels + k * torch.arange(r)[None, :], 1.0)
    counts = onehot.sum(dim=0)
    means = (onehot.T @ x / counts.clamp(min=1)[:, None]).reshape(r, k, -1)
    empty = (counts == 0).reshape(r, k)
    for run in empty.any(dim=1).nonzero().flatten().tolist():
        holes = empty[run].nonzero().flatten()
        means[run, holes] = x[far[:, run].topk(len(holes)).indices]
    return means


def _lloyd(
    x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor, tol: float, max_iter: int
) -> torch.Tensor:
    """Lloyd iterations of every restart until its labels repeat or its centres move <= tol.

    Restarts advance together (one matrix product for all), and a converged one drops out.
    """
    n_init, k, dim = centres.shape
    labels = torch.full((len(x), n_init), -1, dtype=torch.long)
    active = torch.ones(n_init, dtype=torch.bool)
    for _ in range(max_iter):
        run = active.nonzero().flatten()
        if not len(run):
            break
        old = centres[run]
        dist = _sq_distances(x, x_sq, old.reshape(-1, dim)).reshape(len(x), len(run), k)
        far, new_labels = dist.min(dim=2)
        new = _cluster_means(x, new_labels, far, k)
        repeated = (new_labels == labels[:, run]).all(dim=0)
        moved = ((new - old) ** 2).sum(dim=(1, 2))
        centres[run], labels[:, run] = new, new_labels
        active[run] = ~repeated & (moved > tol)
    return centres


def kmeans(
    x: np.ndarray, k: int, n_init: int, seed: int, max_iter: int = 300, tol: float = 1e-4
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the rows of x into k clusters; (labels, centroids) of the best of n_init restarts.

    x: n x D float array (float32 is computed in float32, anything else in float64), finite,
    with n >= k. Seeding is greedy k-means++ from a torch.Generator seeded with `seed`; each
    restart runs Lloyd iterations until its labels repeat, its centres move by at most
    tol * (mean feature variance), or max_iter. The restart of lowest inertia wins. Returns
    int64 labels (n) in 0..k-1 and the k x D centroids in x's precision. Computed on features
    centred by their mean, which keeps float32 distances accurate for features far from 0.
    """
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise ValueError(f"x must be a 2-D finite float array, got {x.dtype} {x.shape}")
    k = checks.integer("k", k, least=1, most=len(x))
    n_init = checks.integer("n_init", n_init, least=1)
    seed = checks.integer("seed", seed, least=0)
    max_iter = checks.integer("max_iter", max_iter, least=1)
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    x = np.asarray(x, dtype=np.float32 if x.dtype == np.float32 else np.float64)
    mean = x.mean(axis=0, dtype=np.float64).astype(x.dtype)
    xt = torch.from_numpy(np.ascontiguousarray(x - mean))
    x_sq = (xt * xt).sum(dim=1)
    gen = torch.Generator().manual_seed(seed)
    scaled_tol = tol * float(xt.double().var(dim=0, unbiased=False).mean())
    seeds = _kmeans_plusplus(xt, x_sq, k, n_init, gen)
    centres = _lloyd(xt, x_sq, seeds, scaled_tol, max_iter)
    dist = _sq_distances(xt, x_sq, centres.reshape(n_init * k, -1)).reshape(len(x), n_init, k)
    closest, labels = dist.min(dim=2)
    best = int(closest.double().sum(dim=0).argmin())
    return labels[:, best].numpy(), centres[best].numpy() + mean
