"""Analysis speed: every NC metric and the fine-label recovery on CIFAR-sized feature sets.

Ours: nbutils.collapse.collapse_report (NC1-NC4 and the fine-structure indicators, against
coarse and fine labels, float64 moments accumulated in batches) on the train features, and
nbutils.recovery.recover_fine_labels (per-super-class k-means with n_init restarts, Hungarian
matching, test variants a and b, linear probe) on train + test.

Baseline: the same NC formulas written the straightforward way, a Python loop over samples
that accumulates per-sample float64 outer products and distances. It is slow, so it runs on
the first `--loop-samples` train samples and its time is extrapolated linearly to the whole
train set; ours runs on that subsample too, and every NC value must agree to 1e-8 relative.

The features are a seeded synthetic mixture with the structure of a coarse-trained network's
(see `mixture`). The last line is `ratio <ours / loop>` as a throughput ratio for the NC
metrics (loop seconds / our seconds, both on the whole train set).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from common import load, run

from nbutils.collapse import collapse_report
from nbutils.recovery import recover_fine_labels

FINE_TO_COARSE = np.arange(10) % 5
RTOL = 1e-8


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=50_000)
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--loop-samples", type=int, default=2_000,
                   help="train samples the per-sample loop runs on (then extrapolated)")
    p.add_argument("--n-init", type=int, default=10, help="k-means restarts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int,
                   help="cap on torch and BLAS/OpenMP threads (default: every core)")
    return p.parse_args()


def structure(dim: int, rank: int = 32) -> dict[str, np.ndarray]:
    """Class means and per-class noise bases of the mixture (fixed seed).

    Super-class means are N(0, I); the two fine classes of a super-class sit at +-1 along a
    unit direction of their own, with noise of std 0.78 along it, so about 10% of samples fall
    on the other side (recovery then lands near the ~90% measured on real features). Each class
    also spreads over a random rank-31 subspace with scales 0.9^i and a little isotropic noise.
    """
    rng = np.random.default_rng(1000)
    coarse = rng.normal(size=(5, dim))
    axis = rng.normal(size=(5, dim))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    side = np.where(np.arange(10) < 5, 1.0, -1.0)[:, None]
    means = coarse[FINE_TO_COARSE] + side * axis[FINE_TO_COARSE]
    basis = rng.normal(size=(10, rank, dim)) * (0.9 ** np.arange(rank))[:, None] / math.sqrt(dim)
    basis[:, 0] = 0.78 * axis[FINE_TO_COARSE]
    centred = coarse - coarse.mean(axis=0)
    head = centred + 0.1 * rng.normal(size=centred.shape)
    return {"means": means, "basis": basis, "head_weight": head, "head_bias": np.zeros(5)}


def mixture(n: int, seed: int, parts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """n float32 features and their fine labels, balanced classes in random order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10)
    means, basis = parts["means"], parts["basis"]
    x = 0.1 * rng.standard_normal((n, means.shape[1]), dtype=np.float32)
    for k in range(10):
        idx = np.flatnonzero(labels == k)
        noise = rng.standard_normal((len(idx), basis.shape[1])) @ basis[k]
        x[idx] += (means[k] + noise).astype(np.float32)
    return x, labels


def loop_moments(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Per-class counts, means and scatter matrices, one sample at a time (float64)."""
    dim = x.shape[1]
    counts, sums = np.zeros(k), np.zeros((k, dim))
    for xi, yi in zip(x, labels, strict=True):
        counts[yi] += 1
        sums[yi] += xi
    means = sums / counts[:, None]
    scatter = np.zeros((k, dim, dim))
    for xi, yi in zip(x, labels, strict=True):
        delta = xi - means[yi]
        scatter[yi] += np.outer(delta, delta)
    return counts, means, scatter


def loop_nc1(counts: np.ndarray, means: np.ndarray, scatter: np.ndarray) -> float:
    """tr(Sigma_W Sigma_B^+) with Sigma_B^+ from the top K-1 eigenpairs, without / K."""
    k = len(counts)
    within = scatter.sum(axis=0) / counts.sum()
    centred = means - means.mean(axis=0)
    evals, evecs = np.linalg.eigh(centred.T @ centred / k)
    evals, evecs = evals[-(k - 1):], evecs[:, -(k - 1):]
    return float(np.trace(within @ (evecs / evals) @ evecs.T))


def cv(values: np.ndarray) -> float:
    """Coefficient of variation with the unbiased std."""
    return float(np.std(values, ddof=1) / np.mean(values))


def loop_level(counts: np.ndarray, means: np.ndarray, scatter: np.ndarray) -> dict[str, float]:
    """NC1 and NC2 of one label level from its moments."""
    k = len(counts)
    centred = means - means.mean(axis=0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    cosines = [abs(unit[a] @ unit[b] + 1 / (k - 1)) for a in range(k) for b in range(a + 1, k)]
    gram = centred @ centred.T
    etf = (np.eye(k) - 1 / k) / math.sqrt(k - 1)
    unnormalised = loop_nc1(counts, means, scatter)
    return {
        "nc1": unnormalised / k, "nc1_unnormalised": unnormalised,
        "nc2_equinorm": cv(np.linalg.norm(centred, axis=1)),
        "nc2_equiangular": float(np.mean(cosines)),
        "nc2_etf_distance": float(np.linalg.norm(gram / np.linalg.norm(gram) - etf)),
    }


def loop_nc4(x: np.ndarray, means: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> float:
    """Share of samples whose head prediction differs from the nearest class mean."""
    differ = 0
    for xi in x:
        head = np.argmax(weight @ xi + bias)
        nearest = np.argmin([np.sum((xi - mu) ** 2) for mu in means])
        differ += int(head != nearest)
    return differ / len(x)


def loop_report(x: np.ndarray, fine: np.ndarray, weight: np.ndarray,
                bias: np.ndarray) -> dict[str, dict]:
    """The NC values collapse_report gives for a coarse-trained head, by per-sample loops."""
    x = x.astype(np.float64)
    fine_m = loop_moments(x, fine, 10)
    coarse_m = loop_moments(x, FINE_TO_COARSE[fine], 5)
    coarse = loop_level(*coarse_m)
    centred = coarse_m[1] - coarse_m[1].mean(axis=0)
    coarse["nc2_equinorm_head"] = cv(np.linalg.norm(weight, axis=1))
    coarse["nc3"] = float(np.linalg.norm(
        weight / np.linalg.norm(weight) - centred / np.linalg.norm(centred)
    ))
    coarse["nc4"] = loop_nc4(x, coarse_m[1], weight, bias)
    nc1_within, fractions = [], []
    for s in range(5):
        members = np.flatnonzero(FINE_TO_COARSE == s)
        counts, means, scatter = (m[members] for m in fine_m)
        nc1_within.append(loop_nc1(counts, means, scatter) / len(members))
        pooled = counts @ means / counts.sum()
        between = sum(n * np.sum((mu - pooled) ** 2) for n, mu in zip(counts, means, strict=True))
        within = sum(np.trace(s_k) for s_k in scatter)
        fractions.append(float(between / (between + within)))
    return {"coarse": coarse, "fine": loop_level(*fine_m),
            "fine_structure": {"nc1_within_superclass": nc1_within,
                               "fine_variance_fraction": fractions}}


def flatten(report: dict[str, dict], keys: dict[str, dict]) -> dict[str, float]:
    """The values of `report` named in `keys`, list entries numbered."""
    out = {}
    for level, metrics in keys.items():
        for name in metrics:
            value = report[level][name]
            items = enumerate(value) if isinstance(value, list) else [(None, value)]
            for i, v in items:
                out[f"{level}.{name}" + ("" if i is None else f"[{i}]")] = float(v)
    return out


def max_relative_difference(ours: dict[str, float], loop: dict[str, float]) -> tuple[float, str]:
    """Largest |ours - loop| / max(|ours|, |loop|) over the values, and its name."""
    worst, name = 0.0, ""
    for key, b in loop.items():
        a = ours[key]
        scale = max(abs(a), abs(b))
        rel = 0.0 if a == b else abs(a - b) / scale
        if rel > worst or math.isnan(rel):
            worst, name = rel, key
    return worst, name


def timed(fn, *args, **kwargs) -> tuple[object, tuple[float, float]]:
    """fn's result, its wall seconds and the CPU seconds this process spent (all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - wall, time.process_time() - cpu)


def measure(args: argparse.Namespace) -> None:
    """Time ours and the loop, check agreement, print the table; the last line is the ratio."""
    parts = structure(args.dim)
    train_x, train_y = mixture(args.n_train, args.seed, parts)
    test_x, test_y = mixture(args.n_test, args.seed + 1, parts)
    weight, bias = parts["head_weight"], parts["head_bias"]
    test_pred = np.argmax(test_x @ weight.T + bias, axis=1)
    m = min(args.loop_samples, args.n_train)
    load_before = load()

    loop, loop_s = timed(loop_report, train_x[:m], train_y[:m], weight, bias)
    sub = collapse_report(train_x[:m], train_y[:m], FINE_TO_COARSE, "coarse", weight, bias)
    diff, worst = max_relative_difference(flatten(sub, loop), flatten(loop, loop))
    _, nc_s = timed(collapse_report, train_x, train_y, FINE_TO_COARSE, "coarse", weight, bias)
    rec, rec_s = timed(
        recover_fine_labels, train_x, train_y, test_x, test_y, FINE_TO_COARSE,
        test_coarse_pred=test_pred, n_init=args.n_init, seed=args.seed,
    )
    loop_full = tuple(t * args.n_train / m for t in loop_s)
    total = tuple(a + b for a, b in zip(nc_s, rec_s, strict=True))

    print(f"{args.n_train:,} train + {args.n_test:,} test features x {args.dim} (float32), "
          f"10 fine classes in 5 super-classes, k-means n_init={args.n_init}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"load average (1/5/15 min): before {load_before}, after {load()}")
    extrapolated = "" if m == args.n_train else f", extrapolated from {m:,}"
    rows = [
        (f"NC metrics, per-sample loop ({m:,} train samples)", loop_s),
        (f"NC metrics, per-sample loop ({args.n_train:,}{extrapolated})", loop_full),
        (f"NC metrics, ours: collapse_report ({args.n_train:,})", nc_s),
        ("recovery, ours: recover_fine_labels (k-means + probe)", rec_s),
        ("ours in all: NC metrics + recovery", total),
    ]
    print(f"{'step':<62} {'wall s':>8} {'cpu s':>8}")
    for label, (wall, cpu) in rows:
        print(f"{label:<62} {wall:>8.2f} {cpu:>8.2f}")
    r = rec.metrics
    print(f"recovery on this mixture: train clustering {r['train_cluster_acc']:.4f}, test (a) "
          f"{r['test_acc_true_coarse']:.4f}, test (b) {r['test_acc_pred_coarse']:.4f}, "
          f"probe {r['linear_probe_test_acc']:.4f}")
    agree = "agree" if diff <= RTOL else "DISAGREE"
    print(f"NC values, ours vs loop on {m:,} samples: max relative difference {diff:.1e}"
          f"{f' ({worst})' if worst else ''} over {len(flatten(loop, loop))} values: {agree} "
          f"(tolerance {RTOL:g})")
    print(f"target: ours in all {total[0]:.2f} s wall (< 10 s: "
          f"{'met' if total[0] < 10 else 'NOT met'})")
    print("ratio below: NC throughput of ours / loop (loop wall seconds / our wall seconds)")
    print(f"ratio {loop_full[0] / nc_s[0]:.1f}")


if __name__ == "__main__":
    run(parse_args, measure)
