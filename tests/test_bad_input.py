"""Bad input: every parameter, mapping, data cache and device request that cannot work is refused
before any work, with the exact message docs/reliability.md lists."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import damage, tiny_cfg

from nbutils import __main__ as cli
from nbutils import runs
from nbutils.config import PARAMETERS, resolve
from nbutils.data import DataError, Split, save_cache
from nbutils.distributed import check_world, preflight
from nbutils.features import extract_run
from nbutils.run_data import load_run_data
from nbutils.train import train_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
pytestmark = pytest.mark.usefixtures("one_thread")


def doc_text() -> str:
    """docs/reliability.md."""
    return DOC.read_text()


BAD_PARAMETERS = [
    ("profile", "gpu"), ("run_dir", 3), ("data_root", 5), ("dataset", "mnist"),
    ("mapping", "pairs"), ("width", 0), ("width", 2.5), ("epochs", -3), ("epochs", True),
    ("steps", 0),
    ("seed", -1), ("seed", 2**32), ("train_per_class", 0), ("test_per_class", "20"),
    ("val_per_class", 1.5), ("batch_size", 0), ("lr", 0), ("lr", float("nan")),
    ("weight_decay", -1e-4), ("momentum", 1.0), ("schedule", "linear"),
    ("checkpoint_epochs", [0, 99]), ("checkpoint_epochs", []), ("amp", "fp16"),
    ("device", "tpu"), ("compile", "yes"), ("compile_mode", "fast"), ("train_baseline", 1),
    ("eval_batch_size", -1), ("eval_every", 0), ("step_milestones", [0.75, 0.5]),
    ("augment", "no"), ("clean_train_eval", 0), ("feature_epochs", "some"),
    ("n_init", 0), ("feature_norm", "pca"), ("umap_points", 0), ("umap_neighbors", 1),
]
NOT_PARTITIONS = [
    [0, 0, 1, 1, 2, 2, 3, 3, 4], [0, 0, 1, 1, 2, 2, 3, 3, 5, 5], [0, 0, 1, 1, 2, 2, 3, 3, 4, -1],
    [0, 0, 1, 1, 2, 2, 3, 3, 3, 4], [0.5] * 10, "random:x", {"a": 1},
]


def test_every_parameter_has_a_bad_value_tried() -> None:
    assert {name for name, _ in BAD_PARAMETERS} == set(PARAMETERS)


@pytest.mark.parametrize("name, value", BAD_PARAMETERS, ids=lambda v: repr(v)[:20])
def test_bad_parameter_is_refused_with_its_name(name: str, value: object) -> None:
    with pytest.raises(ValueError) as err:
        resolve(value) if name == "profile" else resolve("ci", **{name: value})
    assert str(err.value).startswith(f"{name}: ")
    assert f"`{err.value}`" in doc_text(), "the exact message belongs in docs/reliability.md"


@pytest.mark.parametrize("mapping", NOT_PARTITIONS, ids=lambda v: repr(v)[:20])
def test_mapping_that_is_not_a_partition_is_refused(mapping: object) -> None:
    with pytest.raises(ValueError) as err:
        resolve("ci", mapping=mapping)
    assert str(err.value).startswith("mapping: ")
    assert f"`{err.value}`" in doc_text()


def test_notebook_flags_must_be_booleans(tmp_path: Path, fake_cache: Path) -> None:
    cfg = tiny_cfg(tmp_path, fake_cache)
    calls = {"resume": lambda: train_model(cfg, "coarse", resume="no"),
             "force": lambda: runs.create_run(cfg, force="yes"),
             "overwrite": lambda: extract_run(cfg, overwrite=1)}
    for name, call in calls.items():
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value).startswith(f"{name}: must be True or False, got ")
        assert f"`{err.value}`" in doc_text()
    assert not Path(cfg.run_dir).exists()


def write_cache(root: Path, **train: object) -> Path:
    """A fake cache whose train.npz arrays are replaced by `train` (None drops one)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 4)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    save_cache(root, Split(images, labels), Split(images[:20], labels[::2]))
    arrays = {"images": images, "labels": labels, **train}
    np.savez(root / "train.npz", **{k: v for k, v in arrays.items() if v is not None})
    return root


BAD_CACHES = {
    "missing": None,
    "not an npz": "garbage",
    "no labels": {"labels": None},
    "NCHW images": {"images": np.zeros((40, 3, 32, 32), np.uint8)},
    "float images": {"images": np.zeros((40, 32, 32, 3), np.float32)},
    "short labels": {"labels": np.arange(39) % 10},
    "float labels": {"labels": (np.arange(40) % 10).astype(float)},
    "label 10": {"labels": np.arange(40) % 11},
    "label -1": {"labels": np.arange(40) % 10 - 1},
}


@pytest.mark.parametrize("case", sorted(BAD_CACHES))
def test_bad_data_root_is_refused_before_training(tmp_path: Path, case: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "cache"
    bad = BAD_CACHES[case]
    if bad == "garbage":
        write_cache(root)
        (root / "train.npz").write_bytes(b"not an npz file")
    elif bad is not None:
        write_cache(root, **bad)
    run_dir = tmp_path / "run"
    code = cli.main(["train", "--profile", "ci", "--run-dir", str(run_dir), "--data-root",
                     str(root), "--set", "train_per_class=4", "--set", "test_per_class=2"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: data_root: "), err
    # numpy's own reason, after the parenthesis, changes between numpy versions.
    message = err.removeprefix("error: ").strip().replace(str(root), "<data_root>")
    assert f"`{message.split(' (This')[0]}" in doc_text()
    assert not run_dir.exists(), "nothing may be written for a run that cannot start"


def test_truncated_data_cache_is_a_data_error(tmp_path: Path) -> None:
    root = write_cache(tmp_path / "cache")
    damage(root / "train.npz", "truncated")
    with pytest.raises(DataError, match="data_root: "):
        load_run_data(tiny_cfg(tmp_path, root))


@pytest.mark.parametrize("name, value", [("train_per_class", 5), ("test_per_class", 3)])
def test_subset_larger_than_the_data_is_refused(tmp_path: Path, fake_cache: Path, name: str,
                                                value: int) -> None:
    with pytest.raises(ValueError) as err:
        load_run_data(tiny_cfg(tmp_path, fake_cache, **{name: value}))
    assert str(err.value).startswith(f"{name}: must be at most ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_before_work(tmp_path: Path, fake_cache: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    code = cli.main(["train", "--profile", "ci", "--run-dir", str(run_dir), "--data-root",
                     str(fake_cache), "--set", "device=cuda"])
    err = capsys.readouterr().err.removeprefix("error: ").strip()
    assert code == 2 and err.startswith("device: 'cuda'")
    assert f"`{err}`" in doc_text()
    assert not run_dir.exists()


MASTER = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
BAD_WORLDS = [
    ({"WORLD_SIZE": "two"}, "cpu"),
    ({"WORLD_SIZE": "0"}, "cpu"),
    ({"WORLD_SIZE": "2"}, "cpu"),
    ({"WORLD_SIZE": "2", "RANK": "2", **MASTER}, "cpu"),
    ({"WORLD_SIZE": "3", **MASTER}, "cpu"),
    ({"WORLD_SIZE": "2", **MASTER}, "cuda"),
]


@pytest.mark.parametrize("env, device", BAD_WORLDS, ids=lambda v: str(v)[:30])
def test_more_ranks_than_exist_are_refused(monkeypatch: pytest.MonkeyPatch, env: dict,
                                           device: str) -> None:
    for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # A fixed machine, so that the messages match the documented ones: 2 cores, 1 GPU.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError) as err:
        check_world(torch.device(device))
    assert f"`{err.value}`" in doc_text()


def test_batch_not_divisible_by_ranks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1", **MASTER}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError) as err:
        preflight(resolve("ci", batch_size=127, device="cpu"))
    assert f"`{err.value}`" in doc_text()
