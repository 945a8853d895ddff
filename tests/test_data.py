"""Data: cache round trip and validation, mappings, subsets, CIFAR-100 format, augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nbutils.data import (
    DataError,
    Split,
    augment,
    coarse_mapping,
    load_cifar,
    normalize,
    read_cifar100_python,
    save_cache,
    stratified_subset,
    to_tensor,
)
from tests.conftest import fake_split


def test_cache_round_trip(tmp_path: Path) -> None:
    train, test = fake_split(3, 10, 0), fake_split(2, 10, 1)
    save_cache(tmp_path, train, test)
    tr, te = load_cifar(tmp_path)
    assert np.array_equal(tr.images, train.images) and np.array_equal(tr.labels, train.labels)
    assert np.array_equal(te.images, test.images) and tr.labels.dtype == np.int64


def test_real_cache_matches_spec(cifar10_root: Path) -> None:
    train, test = load_cifar(cifar10_root)
    assert train.images.shape == (50000, 32, 32, 3) and test.images.shape == (10000, 32, 32, 3)
    assert np.array_equal(np.bincount(train.labels), np.full(10, 5000))
    assert train.labels[:5].tolist() == [6, 9, 9, 4, 1]


@pytest.mark.parametrize("bad, message", [
    ({"images": np.zeros((4, 32, 32), np.uint8)}, "shape"),
    ({"images": np.zeros((4, 32, 32, 3), np.float32)}, "uint8"),
    ({"labels": np.array([0, 1, 2, 10])}, "0..9"),
    ({"labels": np.array([0, 1, 2])}, "length"),
])
def test_invalid_cache_is_rejected(tmp_path: Path, bad: dict, message: str) -> None:
    arrays = {"images": np.zeros((4, 32, 32, 3), np.uint8), "labels": np.arange(4), **bad}
    for name in ("train", "test"):
        np.savez(tmp_path / f"{name}.npz", **arrays)
    with pytest.raises(DataError, match=f"data_root.*{message}"):
        load_cifar(tmp_path)


def test_missing_cache_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data_root"):
        load_cifar(tmp_path / "nowhere")


def test_unreadable_cache_is_rejected(tmp_path: Path) -> None:
    for name in ("train", "test"):
        (tmp_path / f"{name}.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a readable npz"):
        load_cifar(tmp_path)


def test_mappings() -> None:
    assert coarse_mapping("mod5").tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    # {airplane,ship} {automobile,truck} {bird,frog} {cat,dog} {deer,horse}
    assert coarse_mapping("semantic").tolist() == [0, 1, 2, 3, 4, 3, 2, 4, 0, 1]
    rnd = coarse_mapping("random:7")
    assert np.array_equal(np.bincount(rnd), np.full(5, 2))
    assert np.array_equal(rnd, coarse_mapping("random:7"))
    assert not np.array_equal(rnd, coarse_mapping("random:8"))
    assert coarse_mapping([1, 1, 0, 0, 2, 2, 3, 3, 4, 4]).tolist()[:2] == [1, 1]


@pytest.mark.parametrize("spec, message", [
    ("mod3", "allowed"),
    ("random:x", "integer seed"),
    ([0, 1, 2], "10 entries"),
    ([0, 0, 1, 1, 2, 2, 3, 3, 5, 5], "every id used"),
    ([0, 0, 1, 1, 2, 2, 3, 3, 4, 5], "at least two"),
])
def test_bad_mapping_names_parameter(spec, message: str) -> None:
    with pytest.raises(ValueError, match=f"mapping.*{message}"):
        coarse_mapping(spec)


def write_fake_cifar100(folder: Path, n_per_class: int) -> None:
    """A tiny CIFAR-100 in the official pickle format (5 fine classes per super-class)."""
    folder.mkdir(parents=True)
    fine = np.repeat(np.arange(100), n_per_class)
    coarse = (np.arange(100) % 20)[fine]
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        data = rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)
        d = {b"data": data, b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()}
        (folder / name).write_bytes(pickle.dumps(d))


def test_cifar100_official_format(tmp_path: Path) -> None:
    write_fake_cifar100(tmp_path / "cifar-100-python", 2)
    train, test = read_cifar100_python(tmp_path / "cifar-100-python")
    assert train.images.shape == (200, 32, 32, 3) and train.coarse is not None
    save_cache(tmp_path / "cache", train, test)
    tr, _ = load_cifar(tmp_path / "cache", "cifar100")
    mapping = coarse_mapping("cifar100", "cifar100", tr)
    assert mapping.tolist() == (np.arange(100) % 20).tolist()
    with pytest.raises(ValueError, match="mapping"):
        coarse_mapping("mod5", "cifar100", tr)


def test_stratified_subset() -> None:
    labels = np.repeat(np.arange(10), 50)
    idx = stratified_subset(labels, 7, seed=3)
    assert np.array_equal(np.bincount(labels[idx]), np.full(10, 7))
    assert np.array_equal(idx, stratified_subset(labels, 7, seed=3))
    assert len(np.unique(idx)) == 70
    with pytest.raises(ValueError, match="smallest class"):
        stratified_subset(labels, 51, seed=0)


def test_augment_is_a_crop_of_the_padded_image_or_its_mirror() -> None:
    split = fake_split(2, 10, 0)
    x = to_tensor(split.images)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        crops = [padded[i, :, r:r + 32, c:c + 32] for r in range(9) for c in range(9)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)


def test_augment_statistics() -> None:
    x = torch.arange(32, dtype=torch.uint8).repeat(4000, 3, 32, 1)
    out = augment(x, torch.Generator().manual_seed(1))
    # Column 4 of the output is column 0..8 of the original after a shift, mirrored half the time.
    flipped = (out[:, 0, 10, 5].int() > out[:, 0, 10, 6].int()).float().mean()
    assert 0.45 < float(flipped) < 0.55
    zero_rows = (out[:, 0].sum(dim=2) == 0).any(dim=1).float().mean()
    assert 0.8 < float(zero_rows) < 0.95  # 8 of 9 vertical offsets put padding in view


def test_normalize() -> None:
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize(x, torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25]))
    assert torch.allclose(out, torch.full_like(out, 2.0))


def test_split_take() -> None:
    s = Split(np.zeros((3, 32, 32, 3), np.uint8), np.array([0, 1, 2]))
    assert s.take(np.array([2])).labels.tolist() == [2]
