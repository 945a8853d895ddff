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


@pytest.mark.parametrize("kwargs, name", [
    ({"width": 0}, "width"),
    ({"width": 2.5}, "width"),
    ({"epochs": -3}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"seed": -1}, "seed"),
    ({"lr": 0}, "lr"),
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"batch_size": 0}, "batch_size"),
    ({"schedule": "linear"}, "schedule"),
    ({"amp": "fp16"}, "amp"),
    ({"device": "tpu"}, "device"),
    ({"dataset": "mnist"}, "dataset"),
    ({"mapping": "pairs"}, "mapping"),
    ({"mapping": [0, 0, 1, 1, 2, 2, 3, 3, 4]}, "mapping"),
    ({"feature_norm": "pca"}, "feature_norm"),
    ({"n_init": 0}, "n_init"),
    ({"checkpoint_epochs": [0, 99]}, "checkpoint_epochs"),
    ({"train_per_class": 0}, "train_per_class"),
    ({"compile": "yes"}, "compile"),
])
def test_bad_parameter_is_named(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}: "):
        resolve("ci", **kwargs)


def test_unknown_profile_and_parameter() -> None:
    with pytest.raises(ValueError, match="profile: unknown value 'gpu'; allowed: ci, cpu, paper"):
        resolve("gpu")
    with pytest.raises(ValueError, match="unknown parameter.*widht"):
        resolve("ci", widht=8)


def test_every_profile_key_is_a_parameter() -> None:
    for profile in PROFILES.values():
        assert set(profile) <= set(PARAMETERS)
