"""Tests for nbutils.seeds: flattening results records and summarising them over seeds."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from nbutils.__main__ import main
from nbutils.seeds import SD_NOTE, flatten, summarise_seeds, write_seeds

REPO = Path(__file__).resolve().parents[1]


def fabricated(seed: int, test_acc: float, pred: float | None = 0.9, **top: object) -> dict:
    """A small results record of the cpu profile with the given seed and numbers."""
    return {
        "profile": "cpu", "mapping": "mod5", "width": 16, "epochs": 30, "seed": seed,
        "device": "cpu", "train_size": 100, "test_size": 100,
        "coarse": {"train_acc": 0.99, "test_acc": test_acc,
                   "ci95": {"test_acc": [0.8, 0.95]}},
        "baseline": None,
        "recovery": {"train_cluster_acc": 0.97, "test_acc_pred_coarse": pred,
                     "per_superclass": [0.9, 1.0]},
        "controls": {"random_init": {"test_acc_true_coarse": 0.58}},
        "nc": {"coarse": {"nc1": 0.1 * (seed + 1), "nc3": None}},
        "wall_seconds": {"train": 10.0},
        "history": [{"epoch": 1}],
        **top,
    }


def test_flatten_dotted_keys() -> None:
    flat = flatten(fabricated(0, 0.9, ratio_to_baseline=0.97))
    assert flat == {
        "coarse.train_acc": 0.99, "coarse.test_acc": 0.9,
        "recovery.train_cluster_acc": 0.97, "recovery.test_acc_pred_coarse": 0.9,
        "recovery.per_superclass.0": 0.9, "recovery.per_superclass.1": 1.0,
        "controls.random_init.test_acc_true_coarse": 0.58,
        "nc.coarse.nc1": 0.1, "nc.coarse.nc3": None, "ratio_to_baseline": 0.97,
    }


def test_flatten_the_published_paper_run() -> None:
    flat = flatten(json.loads((REPO / "figures/paper/results.json").read_text()))
    assert flat["recovery.test_acc_pred_coarse"] == 0.9157
    assert flat["controls.raw_pixels.test_acc_true_coarse"] == 0.6433
    assert "nc.fine.nc1" in flat and "ratio_to_baseline" in flat
    assert not any("ci95" in k or k.startswith(("history", "wall")) for k in flat)


def test_summary_closed_form() -> None:
    runs = [fabricated(2, 0.90), fabricated(0, 0.92, pred=None), fabricated(1, 0.97)]
    out = summarise_seeds(runs)
    assert out["seeds"] == [0, 1, 2] and list(out["per_seed"]) == ["0", "1", "2"]
    assert (out["profile"], out["sd"]) == ("cpu", SD_NOTE)
    stat = out["summary"]["coarse.test_acc"]
    assert stat["mean"] == pytest.approx(0.93, abs=1e-15)
    assert stat["sd"] == pytest.approx(math.sqrt(0.0013), abs=1e-15)
    assert stat["n"] == 3 and stat["values"] == [0.92, 0.97, 0.90]
    # Missing in seed 0: summarised over the two seeds that have it.
    assert out["summary"]["recovery.test_acc_pred_coarse"]["n"] == 2
    assert out["per_seed"]["0"]["recovery.test_acc_pred_coarse"] is None
    assert "nc.coarse.nc3" not in out["summary"]
    assert out["summary"]["recovery.train_cluster_acc"]["sd"] == pytest.approx(0.0, abs=1e-15)


def test_one_seed_has_no_sd() -> None:
    assert math.isnan(summarise_seeds([fabricated(0, 0.9)])["summary"]["coarse.test_acc"]["sd"])


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (fabricated(0, 0.9), "seed"),
        (fabricated(1, 0.9, width=32), "differ in more than the seed"),
        (fabricated(1, 0.9, epochs=31), "differ in more than the seed"),
        (fabricated(1, 0.9, profile="paper"), "differ in more than the seed"),
        (fabricated(1, 0.9, mapping="animals"), "differ in more than the seed"),
    ],
)
def test_refuses_mixed_runs(other: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        summarise_seeds([fabricated(0, 0.9), other])


def test_refuses_nothing() -> None:
    with pytest.raises(ValueError, match="results"):
        summarise_seeds([])


def test_write_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = []
    for seed, acc in ((0, 0.9), (1, 0.92)):
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        (run / "results.json").write_text(json.dumps(fabricated(seed, acc)))
        dirs.append(run)
    out = write_seeds(dirs, tmp_path / "a" / "seeds.json")
    assert json.loads((tmp_path / "a" / "seeds.json").read_text()) == out
    assert main(["seeds", *map(str, dirs), "--out", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text()) == out
    assert "seeds [0, 1]" in capsys.readouterr().out
    bad = copy.deepcopy(fabricated(1, 0.9, width=8))
    (dirs[1] / "results.json").write_text(json.dumps(bad))
    assert main(["seeds", *map(str, dirs), "--out", str(tmp_path / "c.json")]) == 2
    assert "differ in more than the seed" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
