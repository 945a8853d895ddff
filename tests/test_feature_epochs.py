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


@pytest.mark.slow
def test_a_phase_run_extracts_only_what_it_reads_and_keeps_its_test_features(
        tmp_path: Path, fake_cache: Path) -> None:
    import numpy as np

    from nbutils import stages
    from nbutils.features import load_features
    from nbutils.runs import load_npz, phase_features_path

    cfg = stages.configure("ci", run_dir=str(tmp_path / "run"), data_root=str(fake_cache),
                           width=2, epochs=2, train_per_class=4, test_per_class=2,
                           batch_size=8, checkpoint_epochs=[0, 1, 2], augment=False,
                           clean_train_eval=True, feature_epochs="phase")
    res = stages.run(cfg, progress=False)
    coarse = sorted(p.name for p in (Path(cfg.run_dir) / "coarse" / "features").iterdir())
    baseline = sorted(p.name for p in (Path(cfg.run_dir) / "baseline" / "features").iterdir())
    phase = res["terminal_phase"]
    onset = [f"epoch_{phase['onset_epoch']:03d}.npz"] if phase["onset_epoch"] else []
    assert coarse == sorted({"epoch_000.npz", "epoch_002.npz", *onset})
    assert baseline == ["epoch_002.npz"]
    assert [c["epochs"] for c in res["clean_train"].values()] == [[1, 2], [1, 2]]
    kept = load_npz(phase_features_path(cfg))
    end = load_features(cfg, "coarse", 2)
    assert np.array_equal(kept["test_features_2"], end["test_features"].astype(np.float16))
    assert kept["train_fine_means_2"].shape == (10, end["train_features"].shape[1])
    from nbutils.cluster_axis import train_shares
    np.testing.assert_array_equal(kept["train_variance_share_2"], train_shares(
        end["train_features"], end["train_fine"], end["fine_to_coarse"], cfg.feature_norm))
