"""The terminal-phase test of nbutils.phase on hand-made accuracy curves with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbutils.phase import terminal_phase, terminal_phase_of

REPO = Path(__file__).resolve().parents[1]


def test_reached_with_onset_and_fraction() -> None:
    # Above 0.995 from epoch 60 of 100: held over 40% >= 30%.
    out = terminal_phase([0, 20, 40, 60, 80, 100], [0.1, 0.8, 0.99, 0.996, 1.0, 0.999])
    assert out == {"reached": True, "onset_epoch": 60, "held_fraction": pytest.approx(0.4),
                   "threshold": 0.995, "hold": 0.3}


def test_not_reached_when_held_too_briefly() -> None:
    out = terminal_phase([0, 50, 80, 100], [0.2, 0.99, 0.996, 0.998])
    assert out["onset_epoch"] == 80
    assert out["held_fraction"] == pytest.approx(0.2)
    assert out["reached"] is False


def test_dip_moves_the_onset_after_it() -> None:
    # 0.99 at epoch 40 breaks the stretch that began at 20: only 40 -> 100 counts after it.
    out = terminal_phase([0, 20, 40, 60, 100], [0.1, 0.999, 0.99, 0.999, 1.0])
    assert out["onset_epoch"] == 60
    assert out["held_fraction"] == pytest.approx(0.4)
    assert out["reached"] is True


def test_never_above_threshold() -> None:
    out = terminal_phase([0, 10, 30], [0.1, 0.9, 0.98])
    assert out["onset_epoch"] is None and out["held_fraction"] == 0.0 and not out["reached"]


def test_threshold_and_hold_are_parameters() -> None:
    out = terminal_phase([0, 10, 30], [0.1, 0.9, 0.98], threshold=0.9, hold=0.7)
    assert out["onset_epoch"] == 10
    assert out["held_fraction"] == pytest.approx(2 / 3)
    assert out["reached"] is False
    assert terminal_phase([0, 10, 30], [0.1, 0.9, 0.98], threshold=0.9, hold=0.6)["reached"]


def test_exactly_at_threshold_and_hold_counts() -> None:
    out = terminal_phase([0, 70, 100], [0.0, 0.995, 0.995])
    assert out["onset_epoch"] == 70
    assert out["held_fraction"] == pytest.approx(0.3)
    assert out["reached"] is True


def test_no_training_is_not_the_terminal_phase() -> None:
    out = terminal_phase([0], [1.0], hold=0.0)
    assert out["onset_epoch"] == 0 and out["held_fraction"] == 0.0 and not out["reached"]


@pytest.mark.parametrize(
    ("epochs", "accs", "kwargs", "message"),
    [
        ([0, 1], [0.5], {}, "clean_train_acc: needs one value per epoch (2), got 1"),
        ([], [], {}, "epochs: must not be empty"),
        ([0, 2, 1], [0.1, 0.2, 0.3], {}, "epochs: must be strictly increasing, got [0, 2, 1]"),
        ([0, 1, 1], [0.1, 0.2, 0.3], {}, "epochs: must be strictly increasing, got [0, 1, 1]"),
        ([0, -1], [0.1, 0.2], {}, "epochs: must be non-negative integers, got [0, -1]"),
        ([0, 1.5], [0.1, 0.2], {}, "epochs: must be non-negative integers, got [0, 1.5]"),
        ([0, 1], [0.1, 95.0], {}, "clean_train_acc[1]: must be a fraction in [0, 1], got 95.0"),
        ([0, 1], [0.1, float("nan")], {},
         "clean_train_acc[1]: must be a fraction in [0, 1], got nan"),
        ([0, 1], [0.1, 0.2], {"threshold": 99.5},
         "threshold: must be a fraction in [0, 1], got 99.5"),
        ([0, 1], [0.1, 0.2], {"hold": -0.1}, "hold: must be a fraction in [0, 1], got -0.1"),
    ],
)
def test_bad_inputs(epochs: list, accs: list, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        terminal_phase(epochs, accs, **kwargs)
    assert str(err.value) == message


def test_of_results_reads_history() -> None:
    res = {"history": [{"epoch": 0, "coarse_train_acc": 0.2},
                       {"epoch": 5, "coarse_train_acc": 0.999},
                       {"epoch": 10, "coarse_train_acc": 1.0}]}
    out = terminal_phase_of(res)
    assert out["reached"] and out["onset_epoch"] == 5 and out["held_fraction"] == 0.5


@pytest.mark.parametrize(
    ("res", "message"),
    [({}, "results: has no 'history' entries to read the terminal phase from"),
     ({"history": [{"epoch": 0}]}, "results: a 'history' entry lacks 'coarse_train_acc'")],
)
def test_of_results_bad(res: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        terminal_phase_of(res)
    assert str(err.value) == message


def test_committed_runs() -> None:
    # The cpu run ends at 95.2%; the paper run first reaches 99.98% at its last checkpoint
    # (epoch 66; 98.6% at epoch 50), so neither holds the threshold over the last 30%.
    cpu = terminal_phase_of(json.loads((REPO / "figures/cpu/results.json").read_text()))
    paper = terminal_phase_of(json.loads((REPO / "figures/paper/results.json").read_text()))
    assert cpu["onset_epoch"] is None and not cpu["reached"]
    assert paper["onset_epoch"] == 66 and paper["held_fraction"] == 0.0 and not paper["reached"]


def test_the_clean_train_curve_of_a_log_and_its_phase_take_precedence() -> None:
    from nbutils.phase import clean_train_curve

    log = [{"epoch": e, "clean_train_acc": a} for e, a in ((10, 0.9), (20, 0.996), (40, 1.0))]
    log.insert(1, {"epoch": 15})  # an epoch that is not a checkpoint has no clean pass
    curve = clean_train_curve(log)
    assert curve == {"epochs": [10, 20, 40], "accs": [0.9, 0.996, 1.0]}
    # The sparse feature history alone would put the onset at 40 (held 0%).
    res = {"history": [{"epoch": 0, "coarse_train_acc": 0.1}, {"epoch": 40,
                                                                "coarse_train_acc": 1.0}],
           "clean_train": {"coarse": curve, "baseline": {"epochs": [40], "accs": [0.99]}}}
    assert terminal_phase_of(res)["onset_epoch"] == 20
    assert terminal_phase_of(res)["held_fraction"] == pytest.approx(0.5)
    assert terminal_phase_of(res, model="baseline")["reached"] is False
    with pytest.raises(ValueError, match="no 'clean_train' curve of 'baseline'"):
        terminal_phase_of({"history": res["history"]}, model="baseline")
