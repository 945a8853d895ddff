"""Loading a checkpoint never runs code: only tensors, plain values and numpy's RNG words."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nbutils.config import resolve
from nbutils.runs import ArtifactError, UnsafeCheckpoint, load_torch, save_torch
from nbutils.train import build_model, make_optimizer, resume_state


class _CreatesAFile:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_pickle_that_would_run_a_command_is_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "coarse" / "last.pt"
    save_torch(path, {"model": {}, "epoch": 3, "extra": _CreatesAFile(marker)})
    with pytest.raises(UnsafeCheckpoint, match=f"{path}.*refused unread.*system"):
        load_torch(path)
    assert not marker.exists()
    assert issubclass(UnsafeCheckpoint, ArtifactError)


def test_our_resume_state_loads_under_the_allow_list(tmp_path: Path) -> None:
    cfg = resolve("ci", run_dir=str(tmp_path / "run"), width=2)
    model = build_model(cfg, 5, torch.device("cpu"))
    state = resume_state(cfg, 1, model, make_optimizer(cfg, model), [{"epoch": 1, "x": None}])
    path = save_torch(tmp_path / "last.pt", state)
    loaded = load_torch(path)
    assert loaded["config"] == cfg.to_dict() and loaded["epoch"] == 1
    assert (loaded["rng"]["numpy"][1] == state["rng"]["numpy"][1]).all()
    assert all(torch.equal(loaded["model"][k], v) for k, v in model.state_dict().items())
