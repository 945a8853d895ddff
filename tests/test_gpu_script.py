"""The epoch planning of scripts/paper_on_gpu.py (the script itself needs a GPU box)."""

from __future__ import annotations

import importlib.util
import json
from argparse import Namespace
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "paper_on_gpu.py"


@pytest.fixture(scope="module")
def script():
    """The script as a module."""
    spec = importlib.util.spec_from_file_location("paper_on_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe(path: Path, img_per_s: float) -> str:
    """A probe file as train_throughput.py --json writes it."""
    path.write_text(json.dumps({"img_per_s": {"ours": img_per_s}}))
    return str(path)


def args_for(tmp_path: Path, single: float, pair: tuple[float, float], min_epochs: int = 100):
    """Planning flags with probe files of the given rates."""
    return Namespace(
        probe=probe(tmp_path / "single.json", single),
        probe_pair=[probe(tmp_path / f"pair{i}.json", r) for i, r in enumerate(pair)],
        default_img_per_s=8000.0, min_epochs=min_epochs, max_epochs=200,
    )


def test_epochs_within_counts_whole_epochs_with_overhead(script) -> None:
    # 50,000 images at 10,000 img/s plus 1.5 s overhead: 6.5 s per epoch.
    assert script.epochs_within(650.0, 10_000.0, 200) == 100
    assert script.epochs_within(649.9, 10_000.0, 200) == 99
    assert script.epochs_within(1e9, 10_000.0, 200) == 200
    assert script.epochs_within(1.0, 10_000.0, 200) == 0


def test_plan_trains_both_when_the_pair_fits(script, tmp_path: Path) -> None:
    # The committed H200 run: 385 s, 13,962 alone, 11,633 and 12,364 as a pair -> 66 epochs.
    epochs, both, why = script.plan(args_for(tmp_path, 13962, (12364, 11633), 60), 385.0)
    assert (epochs, both) == (66, True) and "training both" in why


def test_plan_drops_the_baseline_when_only_the_coarse_model_fits(script, tmp_path) -> None:
    epochs, both, _ = script.plan(args_for(tmp_path, 13962, (12364, 11633), 70), 385.0)
    assert (epochs, both) == (75, False)


def test_plan_keeps_the_minimum_when_nothing_fits(script, tmp_path: Path) -> None:
    epochs, both, why = script.plan(args_for(tmp_path, 1000, (500, 500)), 100.0)
    assert (epochs, both) == (100, False) and "minimum" in why


def test_plan_without_probe_files_uses_the_default_rate(script, tmp_path: Path) -> None:
    args = Namespace(probe=None, probe_pair=[], default_img_per_s=10_000.0, min_epochs=10,
                     max_epochs=200)
    # 10,000 alone and 5,000 each as a pair: 11.5 s per epoch -> 100 epochs in 1150 s.
    assert script.plan(args, 1150.0)[:2] == (100, True)


def test_checkpoints_spread_over_training(script) -> None:
    assert script.checkpoints(66) == [0, 1, 5, 16, 33, 50, 66]
    assert script.checkpoints(3) == [0, 1, 2, 3]
