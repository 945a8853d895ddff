"""Cost estimate before a reproduction: measured steps, cheaper profiles named, refusal past 2 h."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nbutils import cost, reproduce
from nbutils.__main__ import main
from nbutils.config import resolve


def test_estimate_counts_steps_of_every_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cost, "step_seconds", lambda cfg, steps=3: 0.5)
    cfg = resolve("cpu", epochs=10, checkpoint_epochs=[0, 10])
    est = cost.estimate(cfg, train_size=1280, test_size=640)
    assert est.train_steps == 10 * 10 * 2
    assert est.forward_batches == 15 * 2 * 2
    assert est.seconds == pytest.approx(0.5 * (200 + 60 / 3))


def test_check_refuses_past_the_limit_unless_confirmed() -> None:
    big = cost.Estimate("paper", "cpu", 1.0, 10_000, 0)
    small = cost.Estimate("ci", "cpu", 0.01, 1_000, 0)
    with pytest.raises(cost.CostTooHigh, match=r"PROFILE=ci.*\n.*YES=1"):
        cost.check(big, [small], confirmed=False, limit_hours=2.0)
    assert "about 2.8 h" in cost.check(big, [small], confirmed=True, limit_hours=2.0)
    assert "profile ci" in cost.check(small, [], confirmed=False)


def test_step_time_is_measured_on_the_model() -> None:
    seconds = cost.step_seconds(resolve("ci", width=2, batch_size=8, amp="off"), steps=2)
    assert 0 < seconds < 5


@pytest.mark.parametrize(("max_seconds", "steps"), [(0.0, 1 + 1), (60.0, 2 + 3)])
def test_step_timing_stops_at_its_time_budget(monkeypatch: pytest.MonkeyPatch,
                                              max_seconds: float, steps: int) -> None:
    """Warm-up and timed steps: (1, 1) past the budget, else (2, up to `steps`)."""
    calls = []
    make = cost.make_optimizer

    def counting(cfg, model):
        opt = make(cfg, model)
        step = opt.step
        opt.step = lambda *a, **k: (calls.append(1), step(*a, **k))[1]
        return opt

    monkeypatch.setattr(cost, "make_optimizer", counting)
    cost.step_seconds(resolve("ci", width=2, batch_size=8, amp="off"), steps=3,
                      max_seconds=max_seconds)
    assert len(calls) == steps


@pytest.mark.slow
def test_make_reproduce_paper_on_this_cpu_stops_within_a_minute(
        tmp_path: Path, cifar10_root: Path, capsys: pytest.CaptureFixture) -> None:
    if reproduce.cost.select_device("auto").type == "cuda":
        pytest.skip("on a GPU the paper profile just runs")
    t0 = time.perf_counter()
    code = main(["reproduce", "--profile", "paper", "--run-dir", str(tmp_path / "run"),
                 "--data-root", str(cifar10_root)])
    assert code == 2 and time.perf_counter() - t0 < 60
    err = capsys.readouterr().err
    assert "estimated cost: profile paper" in err and "PROFILE=cpu" in err and "YES=1" in err
    assert not (tmp_path / "run").exists()
