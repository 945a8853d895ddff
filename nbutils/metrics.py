"""The metric registry: what each number of a results file is called and how it is written.

A metric's key is its dotted path in a results.json record or in one of its `history` entries
(`recovery.test_acc_pred_coarse`, `nc.fine_structure.fine_variance_fraction_mean`,
`coarse_train_acc`, ...), read by `value` through `nbutils.report.lookup`. Its label is plain
words; where a class count matters the label is a template (`{n_fine}-way`) filled by `label`
from the run's mapping (`classes`), so that a cifar100 run says 20 and 100, not 5 and 10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from nbutils.data import NUM_FINE, coarse_mapping
from nbutils.report import lookup

FRACTION, NUMBER = "fraction", "number"
# The official CIFAR-100 mapping is read off the dataset's labels; its count is fixed.
CIFAR100_SUPERCLASSES = 20


@dataclass(frozen=True)
class Metric:
    """A label (a template over n_coarse and n_fine), a kind and a format spec."""

    label: str
    kind: str = FRACTION  # a fraction is written as a percentage, a number as it is
    spec: str = ".1f"     # format spec of the number written (the percentage, for a fraction)


@dataclass(frozen=True)
class Classes:
    """The numbers of super-classes and of fine classes of a run."""

    n_coarse: int
    n_fine: int


METRICS: dict[str, Metric] = {
    "coarse.test_acc": Metric("coarse ({n_coarse}-way) test accuracy"),
    "coarse.train_acc": Metric("coarse train accuracy (eval mode)"),
    # The same clean train accuracy, as each history entry records it.
    "coarse_train_acc": Metric("coarse train accuracy (eval mode)"),
    "recovery.train_cluster_acc": Metric("recovered {n_fine}-way, train clustering"),
    "recovery.test_acc_true_coarse": Metric(
        "recovered {n_fine}-way test (a): train centroids, true coarse"),
    "recovery.test_acc_pred_coarse": Metric(
        "recovered {n_fine}-way test (b): train centroids, predicted coarse"),
    "recovery.test_cluster_acc_true_coarse": Metric(
        "recovered {n_fine}-way test (c): test clustered within true coarse"),
    "recovery.test_cluster_acc_pred_coarse": Metric(
        "recovered {n_fine}-way test (d): test clustered within predicted coarse"),
    "baseline.test_acc": Metric("{n_fine}-label baseline test accuracy"),
    "ratio_to_baseline": Metric("ratio (b) / baseline", NUMBER, ".3f"),
    "recovery.linear_probe_test_acc": Metric("linear probe on recovered labels (test)"),
    "recovery.nmi": Metric("NMI (train)", NUMBER, ".3f"),
    "recovery.ari": Metric("ARI (train)", NUMBER, ".3f"),
    "recovery.nmi_within_superclass": Metric("NMI within super-class (train)", NUMBER, ".3f"),
    "controls.random_init.test_acc_true_coarse": Metric("control: random-init features (a)"),
    "controls.raw_pixels.test_acc_true_coarse": Metric("control: raw pixels (a)"),
    "nc.coarse.nc1": Metric("NC1 coarse (K={n_coarse})", NUMBER, ".3g"),
    "nc.fine.nc1": Metric("NC1 fine (K={n_fine})", NUMBER, ".3g"),
    "nc.fine_structure.fine_variance_fraction_mean": Metric(
        "between-fine share of super-class variance"),
    "nc.fine_structure.nc1_within_superclass_mean": Metric(
        "NC1 of the fine classes in a super-class", NUMBER, ".3g"),
}


def classes(mapping: Any, dataset: str) -> Classes:
    """The class counts of a run's mapping (a name or an explicit list) on `dataset`."""
    if mapping == "cifar100":
        return Classes(CIFAR100_SUPERCLASSES, NUM_FINE[dataset])
    table = coarse_mapping(mapping, dataset)
    return Classes(len(np.unique(table)), len(table))


def run_classes(res: dict[str, Any]) -> Classes:
    """The class counts of the run a results record (with its `config`) describes."""
    return classes(res["config"]["mapping"], res["config"]["dataset"])


def label(key: str, *runs: Classes) -> str:
    """The label of metric `key`, its class counts those of `runs` ('5/20' where they differ)."""
    counts = {field: "/".join(dict.fromkeys(str(getattr(r, field)) for r in runs))
              for field in ("n_coarse", "n_fine")} if runs else {}
    return METRICS[key].label.format(**counts)


def labels(keys: tuple[str, ...], *runs: Classes) -> dict[str, str]:
    """Key -> label of each of `keys`."""
    return {key: label(key, *runs) for key in keys}


def is_fraction(key: str) -> bool:
    """Whether metric `key` is a fraction (shown as a percentage)."""
    return METRICS[key].kind == FRACTION


def number(key: str, x: float) -> str:
    """A value of metric `key` as written, without its unit ('88.5' for 0.885, '0.612')."""
    return f"{(100 * x if is_fraction(key) else x):{METRICS[key].spec}}"


def write(key: str, x: float) -> str:
    """A value of metric `key` with its unit ('88.5%', '0.612')."""
    return number(key, x) + ("%" if is_fraction(key) else "")


def value(tree: Any, dotted: str) -> float:
    """The number at `dotted` in a results record or history entry; NaN where absent or None."""
    try:
        node = lookup(tree, dotted)
    except KeyError:
        return math.nan
    return math.nan if node is None else float(node)


def interval_key(key: str) -> str:
    """Where a results record keeps the `ci95` interval of metric `key` (beside it)."""
    block, _, leaf = key.rpartition(".")
    return f"{block}.ci95.{leaf}" if block else f"ci95.{leaf}"
