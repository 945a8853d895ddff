"""Shared fixtures and helpers: the real CIFAR-10 cache (skipped when absent), small fake caches
and tiny configs; and the order of test files, longest first by their last measured durations."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from nbutils.config import RunConfig, resolve
from nbutils.data import Split, save_cache

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
# NUMBA too: umap's numba runs on the OpenMP runtime torch shares and would reset its thread
# count to one per core on its first call.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "NUMBA_NUM_THREADS")
# Where pytest's cache keeps each test's duration (setup + call + teardown, seconds) from the
# last run that ran it, by node id.
DURATIONS = "nbutils/test_seconds"


def pytest_configure(config: pytest.Config) -> None:
    """Point every test, and every kernel or process it starts, at one CIFAR-10 cache; give
    each pytest-xdist worker its share of the threads; time the tests for the next session."""
    _data_for_everyone()
    _threads_per_worker(config)
    if not hasattr(config, "workerinput") and config.cache is not None:
        config.pluginmanager.register(DurationRecorder(config), "nbutils-durations")


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


class DurationRecorder:
    """Records each test's duration in pytest's cache at the end of a session (in the pytest-xdist
    controller, which receives every worker's reports), for the next session's file order."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Add one phase (setup, call or teardown) of a test to its duration."""
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self) -> None:
        """Merge this session's durations into the cache; tests it did not run keep theirs."""
        if self.seconds:
            cached = self.config.cache.get(DURATIONS, {})
            self.config.cache.set(DURATIONS, {**cached, **self.seconds})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest test files first, so that pytest-xdist workers, which take whole files in this
    order as they become free, finish together (longest-processing-time-first).

    A file's length is the sum of its selected tests' durations in pytest's cache
    (DurationRecorder);
    files never timed (a fresh checkout) come by their number of slow tests.
    """
    cached = config.cache.get(DURATIONS, {}) if config.cache is not None else {}
    seconds: Counter[str] = Counter()
    slow: Counter[str] = Counter()
    for item in items:
        seconds[item.path.name] += cached.get(item.nodeid, 0.0)
        slow[item.path.name] += item.get_closest_marker("slow") is not None
    items.sort(key=lambda item: (-seconds[item.path.name], -slow[item.path.name]))


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


@pytest.fixture(scope="module")
def one_thread() -> object:
    """Torch on one thread for a module's tiny in-process models: on a busy machine more only
    contend. A module asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cfg(tmp_path: Path, data_root: Path, **params: object) -> RunConfig:
    """A config that trains in about a second on a fake cache."""
    base = dict(run_dir=str(tmp_path / "run"), data_root=str(data_root), width=2, epochs=2,
                train_per_class=4, test_per_class=2, checkpoint_epochs=[0, 2],
                train_baseline=False, amp="off", device="cpu")
    return resolve("ci", **{**base, **params})


def damage(path: Path, how: str) -> None:
    """Truncate, empty, or flip one byte in the middle of `path`."""
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = bytearray()
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
