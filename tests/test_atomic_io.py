"""Atomic artifacts: every writer renames into place, and a damaged or foreign artifact is an
error naming it, never resumed from (docs/reliability.md)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import damage, tiny_cfg

from nbutils import runs
from nbutils.features import extract_run
from nbutils.runs import ArtifactError
from nbutils.train import train_model

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


ARTIFACTS = {
    "checkpoint": (lambda p: runs.save_torch(p, {"model": {"w": torch.randn(4000)}, "epoch": 1}),
                   runs.load_torch, "epoch_001.pt"),
    "features": (lambda p: runs.save_npz(p, train_features=np.random.rand(4000)),
                 runs.load_npz, "epoch_001.npz"),
    "json": (lambda p: runs.save_json(p, {"epoch": 1, "log": [0.5] * 200}),
             runs.load_json, "results.json"),
}


@pytest.mark.parametrize("kind, how", [
    *[(k, h) for k in ("checkpoint", "features") for h in ("truncated", "empty", "flipped")],
    ("json", "truncated"), ("json", "empty"),
])
def test_damaged_artifact_is_an_error_naming_it(tmp_path: Path, kind: str, how: str) -> None:
    save, load, name = ARTIFACTS[kind]
    path = tmp_path / name
    save(path)
    load(path)
    damage(path, how)
    with pytest.raises(ArtifactError) as err:
        load(path)
    assert str(path) in str(err.value) and "delete it" in str(err.value)


@pytest.mark.parametrize("kind", sorted(ARTIFACTS))
def test_writers_are_atomic(tmp_path: Path, kind: str) -> None:
    save, _, name = ARTIFACTS[kind]
    path = tmp_path / name
    save(path)
    before = path.read_bytes()

    def dies(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.atomic_write(path, dies)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert path.stat().st_mode & 0o777 == runs.FILE_MODE


@pytest.mark.slow
def test_truncated_last_pt_is_not_resumed_from(tmp_path: Path, fake_cache: Path) -> None:
    cfg = tiny_cfg(tmp_path, fake_cache)
    train_model(cfg, "coarse", progress=False)
    last = Path(cfg.run_dir) / "coarse" / "last.pt"
    damage(last, "truncated")
    with pytest.raises(ArtifactError) as err:
        train_model(cfg, "coarse", progress=False)
    assert str(last) in str(err.value) and "--no-resume" in str(err.value)
    log = train_model(cfg, "coarse", resume=False, progress=False)
    assert [r["epoch"] for r in log] == [1, 2]
    assert runs.load_torch(last)["epoch"] == 2


@pytest.mark.slow
def test_last_pt_of_another_config_is_not_resumed_from(tmp_path: Path, fake_cache: Path) -> None:
    cfg = tiny_cfg(tmp_path, fake_cache)
    train_model(cfg, "coarse", progress=False)
    with pytest.raises(ArtifactError, match=r"trained with other values \(lr: 0.1 -> 0.05\)"):
        train_model(tiny_cfg(tmp_path, fake_cache, lr=0.05), "coarse", progress=False)


@pytest.mark.slow
def test_training_from_scratch_drops_the_old_features(tmp_path: Path, fake_cache: Path) -> None:
    cfg = tiny_cfg(tmp_path, fake_cache)
    train_model(cfg, "coarse", progress=False)
    feats = extract_run(cfg, progress=False)
    train_model(cfg, "coarse", resume=False, progress=False)
    assert not any(p.exists() for p in feats)


@pytest.mark.slow
def test_damaged_checkpoint_and_features_stop_the_analysis(tmp_path: Path,
                                                          fake_cache: Path) -> None:
    cfg = tiny_cfg(tmp_path, fake_cache)
    train_model(cfg, "coarse", progress=False)
    ckpt = runs.checkpoint_path(cfg, "coarse", 2)
    damage(ckpt, "flipped")
    with pytest.raises(ArtifactError, match=re.escape(str(ckpt))):
        extract_run(cfg, progress=False)
    train_model(cfg, "coarse", resume=False, progress=False)
    feats = extract_run(cfg, progress=False)
    damage(feats[0], "truncated")
    with pytest.raises(ArtifactError, match=re.escape(str(feats[0]))):
        runs.load_npz(feats[0])


WRITES = {"write_text", "write_bytes", "save", "savez", "savez_compressed", "savefig", "copy2",
          "copyfile", "copyfileobj", "dump"}
SAFE = {"replace", "atomic_write", "copy_atomic"}


def raw_writes(module: Path) -> list[str]:
    """Top-level functions of `module` that write a file without a rename into place."""
    import ast

    bad = []
    for node in ast.parse(module.read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        calls = {c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", "")
                 for c in ast.walk(node) if isinstance(c, ast.Call)}
        if calls & WRITES and not calls & SAFE:
            bad.append(f"{module.name}:{node.name}")
    return bad


@pytest.mark.parametrize("module", sorted((REPO / "nbutils").glob("*.py")), ids=lambda p: p.name)
def test_every_writer_renames_into_place(module: Path) -> None:
    assert raw_writes(module) == []
