"""CIFAR data: the npz cache, coarse label mappings, subsets and batched augmentation."""

from __future__ import annotations

import http.client
import os
import pickle
import socket
import urllib.error
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
DATASETS = ("cifar10", "cifar100")
NUM_FINE = {"cifar10": 10, "cifar100": 100}
# Train images per fine class in the official splits.
TRAIN_PER_CLASS = {"cifar10": 5000, "cifar100": 500}
MAPPINGS = ("mod5", "semantic", "random:SEED", "cifar100", "an explicit list of super-class ids")
SEMANTIC_CIFAR10 = (0, 1, 2, 3, 4, 3, 2, 4, 0, 1)
# Per-channel statistics of the CIFAR-10 train split (values / 255), see shared data README.
CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)
CIFAR100_MEAN = (0.50707516, 0.48654887, 0.44091784)
CIFAR100_STD = (0.26733429, 0.25643846, 0.27615047)
DEFAULT_CACHE = Path.home() / ".cache" / "nbutils"
# What a download raises without network: DNS failures, refused or reset connections and
# timeouts (urllib wraps most in URLError; the rest surface while the body is read).
NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, socket.gaierror,
                  http.client.HTTPException)


class DataError(ValueError):
    """A data root or data parameter that cannot be used."""


@dataclass
class Split:
    """One split: uint8 images (N, 32, 32, 3) and int64 fine labels, optional CIFAR-100 coarse."""

    images: np.ndarray
    labels: np.ndarray
    coarse: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> Split:
        """Rows `index` of this split."""
        coarse = None if self.coarse is None else self.coarse[index]
        return Split(self.images[index], self.labels[index], coarse)


def resolve_data_root(data_root: str | os.PathLike | None, dataset: str = "cifar10") -> Path:
    """The cache directory: the argument, else $NBUTILS_DATA, else ~/.cache/nbutils/<dataset>."""
    if data_root not in (None, ""):
        return Path(data_root).expanduser()
    env = os.environ.get("NBUTILS_DATA")
    if env:
        return Path(env).expanduser()
    return DEFAULT_CACHE / dataset


def validate_split(split: Split, name: str, num_classes: int) -> None:
    """Raise DataError unless `split` has CIFAR shapes, dtypes and labels in range."""
    imgs, labels = split.images, split.labels
    if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[1:] != (32, 32, 3):
        raise DataError(
            f"data_root: {name} 'images' must be uint8 of shape (N, 32, 32, 3), "
            f"got {imgs.dtype} {imgs.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(imgs) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"data_root: {name} 'labels' must be an integer vector of length {len(imgs)}, "
            f"got {labels.dtype} {labels.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"data_root: {name} labels must lie in 0..{num_classes - 1}, "
            f"got range {labels.min()}..{labels.max()}"
        )


def load_split(path: Path, num_classes: int) -> Split:
    """Load and validate one cache file (`train.npz` or `test.npz`)."""
    if not path.is_file():
        raise DataError(f"data_root: {path} does not exist; expected train.npz and test.npz there")
    try:
        with np.load(path) as z:
            missing = {"images", "labels"} - set(z.files)
            if missing:
                raise DataError(f"data_root: {path} lacks arrays {sorted(missing)}")
            coarse = z["coarse_labels"].astype(np.int64) if "coarse_labels" in z.files else None
            split = Split(z["images"], z["labels"], coarse)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"data_root: {path} is not a readable npz file ({err})") from err
    validate_split(split, str(path), num_classes)
    split.labels = split.labels.astype(np.int64)
    return split


def save_cache(root: Path, train: Split, test: Split) -> None:
    """Write a split pair in the cache format (atomically, file by file)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", train), ("test", test)):
        arrays = {"images": split.images, "labels": split.labels.astype(np.int64)}
        if split.coarse is not None:
            arrays["coarse_labels"] = split.coarse.astype(np.int64)
        tmp = root / f".{name}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, root / f"{name}.npz")


def read_cifar100_python(folder: Path) -> tuple[Split, Split]:
    """Read the official `cifar-100-python` pickles (train, test) with their 20 super-classes."""
    splits = []
    for name in ("train", "test"):
        with open(folder / name, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        images = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        splits.append(Split(
            np.ascontiguousarray(images),
            np.asarray(d[b"fine_labels"], dtype=np.int64),
            np.asarray(d[b"coarse_labels"], dtype=np.int64),
        ))
    return splits[0], splits[1]


def offline_message(dataset: str, url: str, err: BaseException) -> str:
    """A few lines: the download that failed and how to use an existing cache instead."""
    arrays = "'images' (uint8, N x 32 x 32 x 3), 'labels' (int64, N)"
    if dataset == "cifar100":
        arrays += ", 'coarse_labels' (int64, N)"
    return (
        f"could not download {dataset} ({type(err).__name__}: {err})\n"
        f"  from {url}\n"
        "without network, point at an existing copy of the cache instead:\n"
        "  NBUTILS_DATA=/path/to/cache, or --data-root /path/to/cache (the data_root parameter);\n"
        f"  that folder holds train.npz and test.npz, each with {arrays}"
    )


def download_to_cache(root: Path, dataset: str) -> None:
    """Fetch the dataset with torchvision's checksum-verified download and write the cache."""
    from torchvision import datasets

    raw = root / "raw"
    source = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
    try:
        if dataset == "cifar10":
            tr = source(raw, train=True, download=True)
            te = source(raw, train=False, download=True)
            train = Split(tr.data, np.asarray(tr.targets, dtype=np.int64))
            test = Split(te.data, np.asarray(te.targets, dtype=np.int64))
        else:
            source(raw, train=True, download=True)
            train, test = read_cifar100_python(raw / "cifar-100-python")
    except NETWORK_ERRORS as err:
        raise DataError(offline_message(dataset, source.url, err)) from err
    save_cache(root, train, test)


def load_cifar(
    data_root: str | os.PathLike | None = None, dataset: str = "cifar10", download: bool = True
) -> tuple[Split, Split]:
    """Train and test splits from the npz cache, downloading into it when absent."""
    if dataset not in DATASETS:
        raise DataError(f"dataset: unknown value {dataset!r}; allowed: {', '.join(DATASETS)}")
    root = resolve_data_root(data_root, dataset)
    cached = (root / "train.npz").is_file() and (root / "test.npz").is_file()
    if not cached and download and data_root in (None, "") and not os.environ.get("NBUTILS_DATA"):
        download_to_cache(root, dataset)
    elif not cached:
        raise DataError(
            f"data_root: {root} holds no train.npz/test.npz cache "
            "(give an existing cache, or leave data_root unset to download)"
        )
    k = NUM_FINE[dataset]
    return load_split(root / "train.npz", k), load_split(root / "test.npz", k)


def stratified_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of `per_class` random samples of every class (seeded)."""
    if per_class <= 0:
        raise ValueError(f"per_class must be a positive integer, got {per_class}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    ranked = order[np.argsort(labels[order], kind="stable")]
    counts = np.bincount(labels)
    if counts.min() < per_class:
        raise ValueError(
            f"subset: asked for {per_class} per class but the smallest class has {counts.min()}"
        )
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    take = (starts[:, None] + np.arange(per_class)[None, :]).ravel()
    return np.sort(ranked[take])


def coarse_mapping(
    spec: str | list[int] | tuple[int, ...], dataset: str = "cifar10", train: Split | None = None
) -> np.ndarray:
    """Fine label -> super-class array of a mapping name or an explicit list (protocol, s. 2)."""
    k = NUM_FINE.get(dataset)
    if k is None:
        raise DataError(f"dataset: unknown value {dataset!r}; allowed: {', '.join(DATASETS)}")
    if isinstance(spec, (list, tuple, np.ndarray)):
        return check_mapping(np.asarray(spec), k)
    if not isinstance(spec, str):
        raise ValueError(f"mapping: expected a name or a list of ints, got {type(spec).__name__}")
    if dataset == "cifar100":
        if spec != "cifar100":
            raise ValueError(
                f"mapping: {spec!r} is not defined for cifar100; allowed: 'cifar100' "
                "(the 20 official super-classes) or an explicit list of 100 ids"
            )
        if train is None or train.coarse is None:
            raise DataError("data_root: the cifar100 cache has no 'coarse_labels' array")
        return official_cifar100_mapping(train.labels, train.coarse)
    if spec == "mod5":
        return np.arange(k, dtype=np.int64) % 5
    if spec == "semantic":
        return np.asarray(SEMANTIC_CIFAR10, dtype=np.int64)
    if spec.startswith("random:"):
        return random_pairing(spec, k)
    raise ValueError(f"mapping: unknown value {spec!r}; allowed: {', '.join(MAPPINGS)}")


def random_pairing(spec: str, num_fine: int) -> np.ndarray:
    """A seeded random partition of the fine classes into pairs (`random:SEED`)."""
    seed_text = spec.split(":", 1)[1]
    if not seed_text.isdigit():
        raise ValueError(f"mapping: {spec!r} needs a non-negative integer seed, e.g. 'random:3'")
    if num_fine % 2:
        raise ValueError(f"mapping: random pairing needs an even number of classes, got {num_fine}")
    perm = np.random.default_rng(int(seed_text)).permutation(num_fine)
    mapping = np.empty(num_fine, dtype=np.int64)
    mapping[perm] = np.arange(num_fine) // 2
    return mapping


def official_cifar100_mapping(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """The fine -> super-class table read off the official CIFAR-100 labels."""
    table = np.full(100, -1, dtype=np.int64)
    table[fine] = coarse
    if (table < 0).any():
        raise DataError("data_root: the cifar100 train split does not contain all 100 classes")
    pairs = np.unique(np.stack([fine, coarse]), axis=1)
    if pairs.shape[1] != 100:
        raise DataError("data_root: cifar100 fine labels map to more than one super-class")
    return check_mapping(table, 100)


def check_mapping(mapping: np.ndarray, num_fine: int) -> np.ndarray:
    """Validate that `mapping` assigns each fine class a super-class id 0..G-1, all used."""
    if mapping.ndim != 1 or len(mapping) != num_fine:
        raise ValueError(
            f"mapping: an explicit mapping needs one super-class id per fine class "
            f"({num_fine} entries), got {len(mapping)}"
        )
    if not np.issubdtype(mapping.dtype, np.integer) or mapping.min() < 0:
        raise ValueError("mapping: super-class ids must be non-negative integers")
    groups = np.unique(mapping)
    if not np.array_equal(groups, np.arange(len(groups))):
        raise ValueError(
            f"mapping: super-class ids must be 0..G-1 with every id used, got {groups.tolist()}"
        )
    if np.bincount(mapping).min() < 2:
        raise ValueError("mapping: every super-class must merge at least two fine classes")
    return mapping.astype(np.int64)


def channel_stats(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std used to normalise inputs."""
    return (CIFAR10_MEAN, CIFAR10_STD) if dataset == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)


def stats_tensors(dataset: str, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """channel_stats as (mean, std) float32 tensors on `device`, as `normalize` takes them."""
    return tuple(torch.tensor(s, device=device) for s in channel_stats(dataset))


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC numpy images -> uint8 NCHW tensor on `device` (kept uint8: 4x less memory)."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)


def normalize(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW batch -> float32, scaled to [0,1] and standardised per channel."""
    return (batch.float().div_(255.0) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def augment(batch: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Per-sample random crop (zero padding) and horizontal flip of a whole NCHW batch."""
    n, c, h, w = batch.shape
    dev = batch.device
    padded = torch.nn.functional.pad(batch, (padding, padding, padding, padding))
    offs = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=dev)
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    cols = torch.arange(w, device=dev)
    rows = (offs[0][:, None] + torch.arange(h, device=dev))[:, None, :, None]
    # Flipping is folded into the column index, so crop and flip cost one gather.
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + offs[1][:, None]
    idx_n = torch.arange(n, device=dev)[:, None, None, None]
    idx_c = torch.arange(c, device=dev)[None, :, None, None]
    return padded[idx_n, idx_c, rows, cols[:, None, None, :]]


def class_names(dataset: str, num_fine: int) -> list[str]:
    """Names of the fine classes (CIFAR-10's official names, else 'class i')."""
    if dataset == "cifar10":
        return list(CIFAR10_CLASSES)
    return [f"class {i}" for i in range(num_fine)]


def mapping_table(fine_to_coarse: np.ndarray, names: list[str]) -> dict[int, list[str]]:
    """Super-class id -> names of the fine classes it merges."""
    return {int(s): [names[f] for f in np.flatnonzero(fine_to_coarse == s)]
            for s in np.unique(fine_to_coarse)}
