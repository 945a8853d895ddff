"""Profiles and parameter validation: every bad value is refused before any work, by name."""

from __future__ import annotations

import pytest

from nbutils.config import PARAMETERS, PROFILES, default_checkpoints, resolve
from nbutils.paths import REPO


def test_profiles_resolve() -> None:
    ci, cpu, paper = (resolve(p) for p in ("ci", "cpu", "paper"))
    assert (ci.width, ci.epochs) == (8, 3) and ci.train_per_class is not None
    assert (cpu.width, cpu.train_per_class) == (16, None)
    assert (paper.width, paper.epochs) == (64, 200)
    assert paper.checkpoint_epochs[0] == 0 and paper.checkpoint_epochs[-1] == 200
    assert cpu.run_dir == str(REPO / "runs" / "cpu")


def test_relative_run_dir_resolves_against_one_place(tmp_path, monkeypatch) -> None:
    """A run trained from notebooks/ (JupyterLab's cwd) is the one the root's CLI finds."""
    monkeypatch.delenv("NBUTILS_RUNS", raising=False)
    monkeypatch.chdir(REPO / "notebooks")
    from_notebooks = resolve("ci", run_dir="runs/x").run_dir
    monkeypatch.chdir(tmp_path)
    assert resolve("ci", run_dir="runs/x").run_dir == from_notebooks == str(REPO / "runs" / "x")
    monkeypatch.setenv("NBUTILS_RUNS", str(tmp_path))
    assert resolve("ci", run_dir="runs/x").run_dir == str(tmp_path / "runs" / "x")
    assert resolve("ci", run_dir=str(tmp_path / "abs")).run_dir == str(tmp_path / "abs")


def test_overrides_and_none_means_profile() -> None:
    cfg = resolve("cpu", width=None, epochs=12, mapping="semantic")
    assert (cfg.width, cfg.epochs, cfg.mapping) == (16, 12, "semantic")
    assert cfg.checkpoint_epochs[-1] == 12


def test_default_checkpoints_spread() -> None:
    marks = default_checkpoints(30)
    assert marks[0] == 0 and marks[-1] == 30 and len(marks) >= 6


def test_unknown_profile_and_parameter() -> None:
    with pytest.raises(ValueError, match="profile: unknown value 'gpu'; allowed: ci, cpu, paper"):
        resolve("gpu")
    with pytest.raises(ValueError, match="unknown parameter.*widht"):
        resolve("ci", widht=8)


def test_every_profile_key_is_a_parameter() -> None:
    for profile in PROFILES.values():
        assert set(profile) <= set(PARAMETERS)


def test_a_step_budget_sets_whole_epochs() -> None:
    cfg = resolve("cpu", train_per_class=250, steps=4000)
    assert (cfg.steps, cfg.epochs) == (4000, 200)  # 2,500 images: 20 steps per epoch
    assert resolve("cpu", train_per_class=250, steps=4001).epochs == 201
    assert resolve("cpu", steps=391).epochs == 1  # full CIFAR-10: 391 steps per epoch
    assert cfg.checkpoint_epochs[-1] == 200


def test_steps_and_epochs_together_are_refused() -> None:
    with pytest.raises(ValueError, match="^steps: give a budget in steps or in epochs"):
        resolve("cpu", steps=100, epochs=3)
    cfg = resolve("cpu", train_per_class=250, steps=4000)
    with pytest.raises(ValueError, match="^steps: 4000 steps need 200 epochs"):
        type(cfg)(**{**cfg.to_dict(), "epochs": 10, "checkpoint_epochs": [0, 10]})


def test_full_profile_holds_checkpoints_within_five_percent_after_the_first_third() -> None:
    cfg = resolve("full")
    assert (cfg.width, cfg.train_per_class, cfg.augment, cfg.schedule) == (16, None, False, "step")
    late = [e for e in cfg.checkpoint_epochs if e >= cfg.epochs / 3]
    assert late[-1] == cfg.epochs
    assert max(b - a for a, b in zip(late, late[1:], strict=False)) <= 0.05 * cfg.epochs
    assert cfg.clean_train_eval and cfg.feature_epochs == "phase"


@pytest.mark.parametrize("bad", [[], [0.5, 0.3], [0.0, 0.5], [0.5, 1.0], "0.5", [True]])
def test_step_milestones_must_be_increasing_fractions(bad) -> None:
    with pytest.raises(ValueError, match="step_milestones: must be"):
        resolve("ci", step_milestones=bad)


def test_phase_features_need_the_clean_train_accuracy() -> None:
    with pytest.raises(ValueError, match="feature_epochs: 'phase'.*clean_train_eval=True"):
        resolve("ci", feature_epochs="phase")
    with pytest.raises(ValueError, match="feature_epochs"):
        resolve("ci", feature_epochs="some")
    with pytest.raises(ValueError, match="augment"):
        resolve("ci", augment="no")


def test_a_run_recorded_before_a_parameter_existed_reads_as_its_default() -> None:
    from nbutils.config import TRAINING_KEYS, diff

    old = resolve("ci").to_dict()
    del old["augment"], old["step_milestones"]
    assert diff(old, resolve("ci").to_dict(), TRAINING_KEYS) == []
    assert diff(old, resolve("ci", augment=False).to_dict(), TRAINING_KEYS) == [
        "augment: True -> False"]
