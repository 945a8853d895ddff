"""torchrun with two CPU ranks (gloo) trains and writes the same run directory as one process."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nbutils.data import channel_stats, to_tensor
from nbutils.models import ResNet18
from nbutils.run_data import load_run_data
from nbutils.runs import load_run, load_torch
from nbutils.train import evaluate, load_model

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NBUTILS_DATA") or REPO.parent / "shared" / "data" / "cifar10")
EPOCHS = 2
WIDTH = 8
TRAIN_PER_CLASS, TEST_PER_CLASS = 100, 50
HEADS = {"coarse": 5, "baseline": 10}
# About 10 s each on 2 idle cores; the margin is for a machine busy with other work.
TIMEOUT_S = 300
# 500 test images in eval batches of 192: an odd number of batches, so the ranks evaluate
# unequal shares (DDP's own forward deadlocked there) and rank 1 evaluates some of them. float32
# (amp off) lets the logged test loss be recomputed exactly from the saved checkpoint.
EVAL_BATCH = 192
SETTINGS = [
    "--profile", "ci", "--data-root", str(DATA), "--epochs", str(EPOCHS), "--width", str(WIDTH),
    "--set", f"train_per_class={TRAIN_PER_CLASS}", "--set", f"test_per_class={TEST_PER_CLASS}",
    "--set", f"checkpoint_epochs={list(range(EPOCHS + 1))}",
    "--set", f"eval_batch_size={EVAL_BATCH}", "--set", 'amp="off"', "--no-progress",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not ((DATA / "train.npz").is_file() and (DATA / "test.npz").is_file()),
        reason=f"no CIFAR-10 cache at {DATA} (set NBUTILS_DATA to one)",
    ),
]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(run_dir: Path, nproc: int) -> None:
    """`python -m nbutils train` in one process, or under torchrun with `nproc` ranks."""
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                f"--master_port={free_port()}"] if nproc > 1 else []
    cmd = [sys.executable, *launcher, "-m", "nbutils", "train", "--run-dir", str(run_dir),
           *SETTINGS]
    # One thread per rank, as torchrun would set: the ranks share this machine's cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = run_dir.with_suffix(".log")
    # Output goes to a file, not a pipe that a stuck rank would hold open after a timeout.
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop(proc)
            pytest.fail(f"{' '.join(cmd)} still running after {TIMEOUT_S} s (deadlock?):\n"
                        f"{log.read_text()}")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{log.read_text()}"


def stop(proc: subprocess.Popen) -> None:
    """End a launcher; SIGTERM first, which torchrun passes on to the ranks it started."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def files(root: Path) -> set[str]:
    """Relative paths of every file under `root`, hidden ones (temporaries) included."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The same tiny training run by one process and by two gloo ranks."""
    root = tmp_path_factory.mktemp("distributed")
    out = {}
    for nproc in (1, 2):
        out[nproc] = root / f"world{nproc}"
        train(out[nproc], nproc)
    return out


def test_same_artifacts_as_single_process(runs: dict[int, Path]) -> None:
    single, ddp = files(runs[1]), files(runs[2])
    assert ddp == single, f"only under DDP: {ddp - single}; only single: {single - ddp}"
    assert not [f for f in ddp if "rank" in f or Path(f).name.startswith(".")]


@pytest.mark.parametrize("model", sorted(HEADS))
def test_checkpoints_load_with_right_head(runs: dict[int, Path], model: str) -> None:
    for epoch in range(EPOCHS + 1):
        path = runs[2] / model / "checkpoints" / f"epoch_{epoch:03d}.pt"
        state = load_torch(path)
        assert state["epoch"] == epoch
        net = ResNet18(HEADS[model], WIDTH)
        net.load_state_dict(state["model"])
        assert net.head.out_features == HEADS[model]
        floats = [t for t in net.state_dict().values() if t.is_floating_point()]
        assert all(torch.isfinite(t).all() for t in floats)


@pytest.mark.parametrize("model", sorted(HEADS))
def test_initial_weights_match_single_process(runs: dict[int, Path], model: str) -> None:
    path = Path(model) / "checkpoints" / "epoch_000.pt"
    one, two = (load_torch(runs[n] / path)["model"] for n in (1, 2))
    assert all(torch.equal(one[k], two[k]) for k in one)


@pytest.mark.parametrize("model", sorted(HEADS))
def test_log_has_one_sane_row_per_epoch(runs: dict[int, Path], model: str) -> None:
    log = json.loads((runs[2] / model / "log.json").read_text())
    assert [row["epoch"] for row in log] == list(range(1, EPOCHS + 1))
    n_train, n_test = 10 * TRAIN_PER_CLASS, 10 * TEST_PER_CLASS
    for row in log:
        assert all(math.isfinite(row[k]) for k in ("train_loss", "test_loss", "lr", "seconds"))
        assert 0 < row["train_loss"] < 10 and 0 < row["test_loss"] < 10
        assert row["lr"] > 0 and row["seconds"] > 0
        # Accuracies summed over both ranks' shards are whole counts of the full splits.
        for key, n in (("train_acc", n_train), ("test_acc", n_test)):
            assert 0 <= row[key] <= 1
            assert row[key] * n == pytest.approx(round(row[key] * n), abs=1e-6)


@pytest.mark.parametrize("model", sorted(HEADS))
def test_train_meta_records_world_size(runs: dict[int, Path], model: str) -> None:
    meta = json.loads((runs[2] / model / "train_meta.json").read_text())
    assert meta["world_size"] == 2
    assert meta["num_classes"] == HEADS[model]
    assert (meta["train_size"], meta["test_size"]) == (10 * TRAIN_PER_CLASS, 10 * TEST_PER_CLASS)
    single = json.loads((runs[1] / model / "train_meta.json").read_text())
    assert single["world_size"] == 1


@pytest.mark.parametrize("model", sorted(HEADS))
def test_logged_test_metrics_are_the_saved_models(runs: dict[int, Path], model: str) -> None:
    # Every rank must evaluate with rank 0's weights and BN statistics: the ones saved.
    cfg = load_run(runs[2])
    data = load_run_data(cfg)
    net = load_model(cfg, model, EPOCHS, HEADS[model], torch.device("cpu"))
    stats = tuple(torch.tensor(s) for s in channel_stats(cfg.dataset))
    labels = torch.from_numpy(data.labels(model, "test"))
    loss, acc = evaluate(net, to_tensor(data.test.images), labels, stats, EVAL_BATCH, None)
    last = json.loads((runs[2] / model / "log.json").read_text())[-1]
    assert last["test_acc"] == acc
    assert last["test_loss"] == pytest.approx(loss, rel=1e-6)
