"""Shared fixtures: the real CIFAR-10 cache (skipped when absent) and small fake caches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from nbutils.data import Split, save_cache

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
# NUMBA too: umap's numba runs on the OpenMP runtime torch shares and would reset its thread
# count to one per core on its first call.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "NUMBA_NUM_THREADS")
# Test files by measured duration on 2 cores (pytest --durations), longest first: 200, 100, 80,
# 40 and 40 s; every other file takes under 30 s.
LONGEST_FIRST = ("test_pipeline.py", "test_reliability.py", "test_experiments_pipeline.py",
                 "test_distributed.py", "test_paper_on_gpu.py")


def pytest_configure(config: pytest.Config) -> None:
    """Point every test, and every kernel or process it starts, at one CIFAR-10 cache; then
    give each pytest-xdist worker its share of the threads."""
    _data_for_everyone()
    _threads_per_worker(config)


def _data_for_everyone() -> None:
    """$NBUTILS_DATA when set, else ../shared/data/cifar10 when it holds the cache.

    Exported, so that a notebook executed by a test (papermill starts a fresh kernel) finds the
    same data as the test itself instead of trying to download CIFAR-10.
    """
    if not os.environ.get("NBUTILS_DATA") and (SHARED / "train.npz").is_file():
        os.environ["NBUTILS_DATA"] = str(SHARED)


def _threads_per_worker(config: pytest.Config) -> None:
    """With pytest-xdist, each worker gets cores // workers threads for torch, BLAS and OpenMP.

    Set in the controller before it starts the workers, so that every worker, and each kernel or
    job a test starts, begins with that count as a fresh process would (a count changed after
    start-up trains to different bits than one set at start). Two workers running 2-thread code
    on 2 cores would otherwise spin-wait on each other. An explicit setting is kept.
    """
    workers = getattr(config.option, "numprocesses", None)
    if workers in ("auto", "logical"):
        workers = os.cpu_count()
    if "PYTEST_XDIST_WORKER" in os.environ or not isinstance(workers, int) or workers < 2:
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest test files first, so that pytest-xdist workers, which take files in this
    order as they become free, finish together (longest-processing-time-first)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """The real CIFAR-10 npz cache ($NBUTILS_DATA or ../shared/data/cifar10)."""
    root = Path(os.environ.get("NBUTILS_DATA") or SHARED)
    if not (root / "train.npz").is_file():
        pytest.skip(f"no CIFAR-10 cache at {root}")
    return root


def fake_split(n_per_class: int, num_classes: int, seed: int) -> Split:
    """Random uint8 images with balanced labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    images = rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
    return Split(images, labels.astype(np.int64))


@pytest.fixture
def fake_cache(tmp_path: Path) -> Path:
    """A tiny valid CIFAR-10-format cache."""
    save_cache(tmp_path / "c10", fake_split(4, 10, 0), fake_split(2, 10, 1))
    return tmp_path / "c10"
