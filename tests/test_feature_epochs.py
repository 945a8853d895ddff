"""Which checkpoints get features: all of them, or init, terminal-phase onset and end."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbutils.config import resolve
from nbutils.features import feature_epochs
from nbutils.runs import ArtifactError, model_dir, save_json


def _cfg(tmp_path: Path, **params):
    return resolve("ci", run_dir=str(tmp_path / "run"), epochs=10,
                   checkpoint_epochs=[0, 2, 4, 6, 8, 10], **params)


def test_all_is_every_checkpoint(tmp_path: Path) -> None:
    assert feature_epochs(_cfg(tmp_path), "coarse") == [0, 2, 4, 6, 8, 10]


def test_phase_is_init_onset_and_end_for_the_coarse_model_and_the_end_for_the_baseline(
        tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, clean_train_eval=True, feature_epochs="phase")
    accs = {2: 0.5, 4: 0.996, 6: 0.99, 8: 0.997, 10: 1.0}  # the dip at 6 moves the onset to 8
    for model in ("coarse", "baseline"):
        save_json(model_dir(cfg, model) / "log.json",
                  [{"epoch": e, "clean_train_acc": a} for e, a in accs.items()])
    assert feature_epochs(cfg, "coarse") == [0, 8, 10]
    assert feature_epochs(cfg, "baseline") == [10]


def test_phase_without_a_reached_onset_keeps_init_and_end(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, clean_train_eval=True, feature_epochs="phase")
    save_json(model_dir(cfg, "coarse") / "log.json",
              [{"epoch": e, "clean_train_acc": 0.9} for e in (2, 4, 10)])
    assert feature_epochs(cfg, "coarse") == [0, 10]


def test_phase_on_a_log_without_clean_passes_says_how_to_get_them(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, clean_train_eval=True, feature_epochs="phase")
    save_json(model_dir(cfg, "coarse") / "log.json", [{"epoch": 10, "train_acc": 0.9}])
    with pytest.raises(ArtifactError, match="clean_train_eval=True"):
        feature_epochs(cfg, "coarse")
