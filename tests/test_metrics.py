"""The metric registry: every key names a number of the committed results, labels count classes."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from nbutils import metrics
from nbutils.runs import load_json

REPO = Path(__file__).resolve().parents[1]
COMMITTED = ("figures/cpu/results.json", "figures/full/results.json")


@pytest.mark.parametrize("key", list(metrics.METRICS))
def test_every_key_resolves_in_a_committed_results_file(key: str) -> None:
    found = []
    for path in COMMITTED:
        res = load_json(REPO / path)
        # A key names a number of the record itself, or of its history entries.
        found += [metrics.value(tree, key) for tree in (res, res["history"][-1])]
    assert any(math.isfinite(x) for x in found), key


def test_labels_count_the_classes_of_the_run() -> None:
    mod5 = metrics.classes("mod5", "cifar10")
    cifar100 = metrics.classes("cifar100", "cifar100")
    assert (mod5.n_coarse, mod5.n_fine) == (5, 10)
    assert (cifar100.n_coarse, cifar100.n_fine) == (20, 100)
    assert metrics.classes([i // 5 for i in range(100)], "cifar100") == cifar100
    assert metrics.label("coarse.test_acc", cifar100) == "coarse (20-way) test accuracy"
    assert metrics.label("baseline.test_acc", cifar100).startswith("100-label baseline")
    for key in metrics.METRICS:
        text = metrics.label(key, cifar100)
        # Every count a label states is the run's (the 1 of NC1 is a name, not a count).
        assert set(re.findall(r"(?<![A-Z])\d+", text)) <= {"20", "100"}, text
    assert "100-way" in metrics.label("recovery.test_acc_pred_coarse", cifar100)
    assert metrics.label("nc.fine.nc1", mod5, cifar100) == "NC1 fine (K=10/100)"


def test_a_label_that_counts_classes_needs_a_run() -> None:
    assert metrics.label("recovery.nmi") == "NMI (train)"
    with pytest.raises(KeyError, match="n_coarse"):
        metrics.label("coarse.test_acc")


def test_run_classes_read_the_mapping_of_a_results_record() -> None:
    res = load_json(REPO / "figures/cpu/results.json")
    assert metrics.run_classes(res) == metrics.Classes(5, 10)


def test_value_reads_dotted_keys_and_gives_nan_where_missing() -> None:
    res = {"recovery": {"test_acc_true_coarse": 0.9, "test_acc_pred_coarse": None},
           "history": [{"nc": {"coarse": {"nc1": 0.5}}}], "baseline": None,
           "summary": {"recovery.nmi": {"mean": 0.7}}}
    assert metrics.value(res, "recovery.test_acc_true_coarse") == 0.9
    assert metrics.value(res, "history.-1.nc.coarse.nc1") == 0.5
    assert metrics.value(res, "summary.recovery.nmi.mean") == 0.7
    for missing in ("recovery.test_acc_pred_coarse", "nc.nothing.here", "baseline.test_acc",
                    "history.3.nc.coarse.nc1"):
        assert math.isnan(metrics.value(res, missing)), missing


def test_values_are_written_in_their_format() -> None:
    assert metrics.write("recovery.test_acc_pred_coarse", 0.8853) == "88.5%"
    assert metrics.write("ratio_to_baseline", 0.97712) == "0.977"
    assert metrics.write("nc.coarse.nc1", 0.0047812) == "0.00478"
    assert metrics.interval_key("controls.random_init.test_acc_true_coarse") == (
        "controls.random_init.ci95.test_acc_true_coarse")
