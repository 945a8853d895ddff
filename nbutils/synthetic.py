"""A synthetic model of the paper's setting: fine Gaussian clusters inside coarse classes.

Each coarse class c has a centre m_c; its fine clusters sit around m_c at pairwise distance
`separation` (in units of the isotropic noise std), on directions orthogonal to every centre and
to each other, so `separation` alone sets how far apart the fine clusters of one class are. A
two-layer ReLU network is trained on the coarse labels only; its hidden layer plays the part of
the penultimate features, and the same recovery protocol (with the CIFAR runs' feature
normalisation, `FEATURE_NORM`) and NC1 as for CIFAR are applied to it.

The defaults pass through collapse (scripts/synthetic_pilot.py): the 12 signal directions sit in
d=512 input dimensions and the hidden layer has 64 units, so a random first layer mixes the 500
noise dimensions into the directions of the class means and the hidden layer's coarse NC1
starts near 4, although the raw inputs' is about 0.35 (centres 4 noise-std apart); training on
the coarse labels lowers it more than 10-fold and reaches the terminal phase. With few input
dimensions and a wide hidden layer (d=32, h=256, centres 8 apart, the former default) the
random layer keeps the inputs' geometry and NC1 is about 0.1 from the start.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nbutils import checks
from nbutils.checks import FEATURE_NORMS
from nbutils.collapse import collapse_report
from nbutils.config import RunConfig
from nbutils.phase import terminal_phase
from nbutils.recovery import recover_fine_labels
from nbutils.stats import spread

SYNTHETIC_KEYS = ("recovery_train", "recovery_test", "nc1_coarse", "nc1_fine",
                  "fine_variance_fraction", "coarse_train_acc")
# The CIFAR runs' normalisation before k-means (docs/protocol.md, section 4), so that the two
# recoveries are read the same way.
FEATURE_NORM = RunConfig.feature_norm


@dataclass
class Mixture:
    """Train and test samples of one mixture, with fine labels and the fine -> coarse map."""

    x_train: np.ndarray
    fine_train: np.ndarray
    x_test: np.ndarray
    fine_test: np.ndarray
    fine_to_coarse: np.ndarray

    def coarse(self, split: str) -> np.ndarray:
        """Coarse labels of `split` ('train' or 'test')."""
        return self.fine_to_coarse[getattr(self, f"fine_{split}")]


def mixture_means(
    num_coarse: int, fine_per_coarse: int, dim: int, separation: float,
    coarse_separation: float, seed: int,
) -> np.ndarray:
    """Fine cluster means (num_coarse * fine_per_coarse x dim), fine j of class c at c*k + j."""
    directions = num_coarse * (fine_per_coarse + 1)
    if dim < directions:
        raise ValueError(
            f"dim: must be at least num_coarse * (fine_per_coarse + 1) = {directions} so that "
            f"all directions are orthogonal, got {dim}"
        )
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, directions)))
    centres = basis[:, :num_coarse].T * coarse_separation / math.sqrt(2)
    offsets = basis[:, num_coarse:].T.reshape(num_coarse, fine_per_coarse, dim)
    # Orthonormal offsets scaled by s / sqrt(2) put every pair of fine means at distance s;
    # centring them keeps those distances and makes m_c the class mean.
    offsets = offsets - offsets.mean(axis=1, keepdims=True)
    means = centres[:, None, :] + offsets * separation / math.sqrt(2)
    return means.reshape(-1, dim)


def make_mixture(
    separation: float, n_per_cluster: int = 250, num_coarse: int = 4, fine_per_coarse: int = 2,
    dim: int = 512, coarse_separation: float = 4.0, noise: float = 1.0, seed: int = 0,
) -> Mixture:
    """Seeded Gaussian mixture; `separation` and `coarse_separation` are in units of `noise`."""
    separation = checks.number("separation", separation)
    coarse_separation = checks.number("coarse_separation", coarse_separation)
    noise = checks.number("noise", noise)
    n = checks.integer("n_per_cluster", n_per_cluster, least=1)
    num_coarse = checks.integer("num_coarse", num_coarse, least=2)
    k = checks.integer("fine_per_coarse", fine_per_coarse, least=2)
    dim = checks.integer("dim", dim, least=1)
    seed = checks.integer("seed", seed, least=0)
    means = mixture_means(num_coarse, k, dim, separation, coarse_separation, seed) * noise
    rng = np.random.default_rng(seed + 1)
    labels = np.repeat(np.arange(num_coarse * k), n)

    def draw() -> np.ndarray:
        """One split's samples around the fixed means."""
        return means[labels] + noise * rng.standard_normal((len(labels), dim))

    f2c = np.repeat(np.arange(num_coarse), k)
    return Mixture(draw(), labels, draw(), labels.copy(), f2c)


class TwoLayerNet(torch.nn.Module):
    """x -> relu(W1 x + b1) -> W2 h + b2; the hidden layer is the feature."""

    def __init__(self, dim: int, hidden: int, num_classes: int) -> None:
        """Default PyTorch initialisation (seed it through torch.manual_seed or a generator)."""
        super().__init__()
        self.hidden = torch.nn.Linear(dim, hidden)
        self.head = torch.nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden-layer activations."""
        return F.relu(self.hidden(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coarse-class logits."""
        return self.head(self.features(x))


def train_accuracy(net: TwoLayerNet, x: torch.Tensor, y: torch.Tensor) -> float:
    """Clean coarse accuracy of `net` on (x, y); the net has no dropout or batch norm."""
    with torch.no_grad():
        return float((net(x).argmax(1) == y).double().mean())


def measure(
    net: TwoLayerNet, data: Mixture, n_init: int, seed: int, feature_norm: str = FEATURE_NORM
) -> dict[str, float]:
    """Fine-cluster recovery, NC1 (coarse, fine) and coarse accuracy of the hidden layer."""
    with torch.no_grad():
        h_tr = net.features(torch.from_numpy(data.x_train)).numpy()
        h_te = net.features(torch.from_numpy(data.x_test)).numpy()
        acc = train_accuracy(net, torch.from_numpy(data.x_train),
                             torch.from_numpy(data.coarse("train")))
    rec = recover_fine_labels(h_tr, data.fine_train, h_te, data.fine_test, data.fine_to_coarse,
                              n_init=n_init, seed=seed, feature_norm=feature_norm,
                              probe=False).metrics
    nc = collapse_report(h_tr, data.fine_train, data.fine_to_coarse, "coarse")
    return {"recovery_train": rec["train_cluster_acc"],
            "recovery_test": rec["test_acc_true_coarse"],
            "nc1_coarse": nc["coarse"]["nc1"], "nc1_fine": nc["fine"]["nc1"],
            "fine_variance_fraction": nc["fine_structure"]["fine_variance_fraction_mean"],
            "coarse_train_acc": acc}


def _check_training(
    hidden: int, epochs: int, lr: float, weight_decay: float, batch_size: int, n_init: int,
    seed: int, feature_norm: str,
) -> None:
    """ValueError naming the first bad training parameter."""
    checks.integer("hidden", hidden, least=1)
    checks.integer("epochs", epochs, least=1)
    checks.integer("batch_size", batch_size, least=1)
    checks.integer("n_init", n_init, least=1)
    checks.integer("seed", seed, least=0)
    checks.number("lr", lr, positive=True)
    checks.number("weight_decay", weight_decay)
    checks.choice("feature_norm", feature_norm, FEATURE_NORMS)


def train_synthetic(
    data: Mixture, hidden: int = 64, epochs: int = 100, lr: float = 0.01,
    weight_decay: float = 5e-4, batch_size: int = 128, checkpoints: list[int] | None = None,
    n_init: int = 10, seed: int = 0, feature_norm: str = FEATURE_NORM,
) -> dict[str, Any]:
    """SGD (momentum 0.9) on the coarse labels in float64.

    Returns the measures at every checkpoint (`history`; epochs 0 and `epochs` always among
    them), the clean coarse train accuracy after every epoch (`train_acc`, index = epoch) and
    the terminal phase read off that per-epoch accuracy (nbutils.phase.terminal_phase).
    """
    _check_training(hidden, epochs, lr, weight_decay, batch_size, n_init, seed, feature_norm)
    marks = sorted(set(checkpoints if checkpoints is not None else []) | {0, epochs})
    if marks[0] < 0 or marks[-1] > epochs:
        raise ValueError(f"checkpoints: must lie in 0..epochs={epochs}, got {checkpoints!r}")
    torch.manual_seed(seed)
    net = TwoLayerNet(data.x_train.shape[1], hidden, int(data.fine_to_coarse.max()) + 1).double()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.coarse("train"))
    gen = torch.Generator().manual_seed(seed)
    history = [{"epoch": 0, **measure(net, data, n_init, seed, feature_norm)}]
    accs = [train_accuracy(net, x, y)]
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        # Every epoch, not only at checkpoints, so that the terminal phase's onset is exact.
        accs.append(train_accuracy(net, x, y))
        if epoch in marks:
            history.append({"epoch": epoch, **measure(net, data, n_init, seed, feature_norm)})
    return {"history": history, "train_acc": accs,
            "terminal_phase": terminal_phase(list(range(epochs + 1)), accs)}


def input_recovery(
    data: Mixture, n_init: int = 10, seed: int = 0, feature_norm: str = FEATURE_NORM
) -> float:
    """Fine-cluster recovery (test, true coarse class) on the raw inputs: the control."""
    return recover_fine_labels(data.x_train, data.fine_train, data.x_test, data.fine_test,
                               data.fine_to_coarse, n_init=n_init, seed=seed,
                               feature_norm=feature_norm,
                               probe=False).metrics["test_acc_true_coarse"]


def input_nc1(data: Mixture) -> float:
    """Coarse NC1 of the raw train inputs: what a hidden layer starts from."""
    return collapse_report(data.x_train, data.fine_train, data.fine_to_coarse,
                           "coarse")["coarse"]["nc1"]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with `threads` torch threads, restoring the previous number after."""
    threads = checks.integer("threads", threads, least=1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def separation_sweep(
    separations: list[float], seeds: list[int], mixture: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None, threads: int = 1,
) -> list[dict[str, Any]]:
    """One training per (separation, seed): its record and the raw-input controls.

    One torch thread by default: the matrices are small, so more threads mostly add
    synchronisation, and on busy cores they made a sweep about 10x slower.
    """
    if not separations or not seeds:
        raise ValueError("separations and seeds: each must be a non-empty list")
    mixture, training = mixture or {}, training or {}
    for s in separations:
        checks.number("separations", s)
    control = {"n_init": training.get("n_init", 10),
               "feature_norm": training.get("feature_norm", FEATURE_NORM)}
    out = []
    with torch_threads(threads):
        for s in separations:
            for seed in seeds:
                data = make_mixture(s, seed=seed, **mixture)
                out.append({"separation": float(s), "seed": int(seed),
                            "input_recovery": input_recovery(data, seed=seed, **control),
                            "input_nc1_coarse": input_nc1(data),
                            **train_synthetic(data, seed=seed, **training)})
    return out


def run_summary_row(run: dict[str, Any]) -> dict[str, Any]:
    """One run's record for the results file: terminal phase, recovery, NC1 at init and end."""
    first, last, phase = run["history"][0], run["history"][-1], run["terminal_phase"]
    return {"separation": run["separation"], "seed": run["seed"],
            "final_coarse_train_acc": last["coarse_train_acc"],
            "reached_terminal_phase": phase["reached"], "tpt_epoch": phase["onset_epoch"],
            "tpt_held_fraction": phase["held_fraction"], "epochs": last["epoch"],
            "recovery_train": last["recovery_train"], "recovery_test": last["recovery_test"],
            "init_recovery_test": first["recovery_test"],
            "input_recovery": run["input_recovery"],
            "input_nc1_coarse": run["input_nc1_coarse"],
            "nc1_coarse_init": first["nc1_coarse"], "nc1_coarse_end": last["nc1_coarse"],
            "nc1_coarse_fall": first["nc1_coarse"] / last["nc1_coarse"],
            "nc1_fine_end": last["nc1_fine"],
            "fine_variance_fraction_init": first["fine_variance_fraction"],
            "fine_variance_fraction_end": last["fine_variance_fraction"]}


def summarise_sweep(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per separation: spread over seeds (mean, sample sd, min, max) of initial and final values.

    Also how many seeds reached the terminal phase, the spread of its onset over those that did,
    the raw inputs' coarse NC1 and the factor by which training lowered the hidden layer's.
    """
    rows = []
    for s in sorted({r["separation"] for r in runs}):
        group = [r for r in runs if r["separation"] == s]
        row: dict[str, Any] = {"separation": s, "seeds": len(group),
                               "terminal_phase_reached": sum(r["terminal_phase"]["reached"]
                                                             for r in group)}
        stats = {f"final_{k}": [r["history"][-1][k] for r in group] for k in SYNTHETIC_KEYS}
        stats |= {f"init_{k}": [r["history"][0][k] for r in group] for k in SYNTHETIC_KEYS}
        stats["input_recovery"] = [r["input_recovery"] for r in group]
        stats["input_nc1_coarse"] = [r["input_nc1_coarse"] for r in group]
        stats["nc1_coarse_fall"] = [run_summary_row(r)["nc1_coarse_fall"] for r in group]
        stats["tpt_epoch"] = [r["terminal_phase"]["onset_epoch"] for r in group
                              if r["terminal_phase"]["reached"]]
        row |= {key: spread(values) for key, values in stats.items()}
        rows.append(row)
    return rows


def _defaults(fn: Any) -> dict[str, Any]:
    """The keyword defaults of `fn`, so that a setting in words names what actually ran."""
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def mixture_setting(mixture: dict[str, Any], training: dict[str, Any], seeds: int) -> str:
    """The synthetic setting in words, for figure titles."""
    m = {**_defaults(make_mixture), **mixture}
    t = {**_defaults(train_synthetic), **training}
    return (f"synthetic: {m['num_coarse']} coarse classes x {m['fine_per_coarse']} Gaussian "
            f"clusters, {m['n_per_cluster']}/cluster, d={m['dim']},\ncentres "
            f"{m['coarse_separation']:g} noise-std apart; 2-layer ReLU h={t['hidden']}, "
            f"{t['epochs']} epochs, lr {t['lr']:g},\nk-means on {t['feature_norm']} features, "
            f"{seeds} seed{'s' if seeds != 1 else ''}")


def history_series(
    runs: list[dict[str, Any]], key: str, separations: list[float]
) -> tuple[list[int], dict[str, dict[str, Any]]]:
    """(checkpoint epochs, {'separation s': {'per_seed': seeds x epochs}}) of one measure."""
    epochs = [h["epoch"] for h in runs[0]["history"]]
    series = {}
    for s in separations:
        group = [r for r in runs if r["separation"] == float(s)]
        if not group:
            raise ValueError(f"curves_at: separation {s} was not swept")
        series[f"separation {s:g}"] = {"per_seed": [[h[key] for h in r["history"]] for r in group]}
    return epochs, series
