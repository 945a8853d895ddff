"""Kill and resume: a run SIGKILLed mid-epoch, mid-extraction or mid-write resumes to the bits
of an uninterrupted one, and the same seed gives identical results (docs/reliability.md)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import tiny_cfg

from nbutils import __main__ as cli
from nbutils import reproduce, runs
from nbutils import train as train_mod
from nbutils.config import resolve
from nbutils.train import train_model

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NBUTILS_DATA") or REPO.parent / "shared" / "data" / "cifar10")
EPOCHS = 4
# Tiny on purpose: the point is exactness, not accuracy. One thread per process keeps the
# sub-processes from fighting over this machine's cores.
TINY = [
    "--profile", "ci", "--data-root", str(DATA), "--width", "4", "--epochs", str(EPOCHS),
    "--set", "train_per_class=60", "--set", "test_per_class=20", "--set", "train_baseline=false",
    "--set", f"checkpoint_epochs=[0, 2, {EPOCHS}]", "--set", "umap_points=200", "--no-progress",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# Keys of results.json that measure time rather than the result.
NOT_RESULTS = ("wall_seconds",)
pytestmark = pytest.mark.usefixtures("one_thread")


def nbutils(*args: str, run_dir: Path) -> subprocess.CompletedProcess:
    """`python -m nbutils ARGS --run-dir RUN_DIR` with the tiny settings; it must succeed."""
    cmd = [sys.executable, "-m", "nbutils", *args, "--run-dir", str(run_dir), *TINY]
    done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout}\n{done.stderr}"
    return done


def kill_when(args: list[str], run_dir: Path, ready: Path) -> None:
    """Start `python -m nbutils ARGS` and SIGKILL it as soon as `ready` exists."""
    cmd = [sys.executable, "-m", "nbutils", *args, "--run-dir", str(run_dir), *TINY]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"finished before the kill:\n{err}"


def comparable(results: dict) -> dict:
    """results.json without what may differ between identical runs: times and the directory."""
    out = {k: v for k, v in results.items() if k not in NOT_RESULTS}
    out["config"] = {k: v for k, v in out["config"].items() if k != "run_dir"}
    return out


def tensor_differences(a: dict, b: dict) -> list[str]:
    """Keys of two (nested) state dicts whose tensors are not bit-identical."""
    bad = []
    for key in a.keys() | b.keys():
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            bad += [f"{key}.{k}" for k in tensor_differences(x, y)]
        elif isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            same = isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and torch.equal(x, y)
            if not same:
                bad.append(str(key))
    return bad


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted tiny run, trained and analysed."""
    if not (DATA / "train.npz").is_file():
        pytest.skip(f"no CIFAR-10 cache at {DATA}")
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    nbutils("train", run_dir=run_dir)
    nbutils("analyze", run_dir=run_dir)
    return run_dir


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory, reference: Path) -> tuple[Path, str]:
    """The same run SIGKILLed mid-epoch once epoch 1 is saved, then resumed with --resume."""
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    kill_when(["train"], run_dir, ready=run_dir / "coarse" / "last.pt")
    killed_at = runs.load_torch(run_dir / "coarse" / "last.pt")["epoch"]
    assert 1 <= killed_at < EPOCHS, "the kill came too late to interrupt training"
    done = nbutils("train", "--resume", run_dir=run_dir)
    return run_dir, done.stderr


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_to_identical_weights(reference: Path, resumed: tuple) -> None:
    run_dir, stderr = resumed
    assert re.search(rf"coarse: resuming after epoch [1-{EPOCHS - 1}] of {EPOCHS}", stderr), stderr
    for rel in ("last.pt", "checkpoints/epoch_000.pt", "checkpoints/epoch_002.pt",
                f"checkpoints/epoch_{EPOCHS:03d}.pt"):
        ref = runs.load_torch(reference / "coarse" / rel)
        got = runs.load_torch(run_dir / "coarse" / rel)
        assert not tensor_differences(ref["model"], got["model"]), rel
    ref, got = (runs.load_torch(d / "coarse" / "last.pt") for d in (reference, run_dir))
    assert not tensor_differences(ref["optimizer"]["state"], got["optimizer"]["state"])
    strip = [[{k: v for k, v in row.items() if k != "seconds"} for row in runs.load_json(d)]
             for d in (reference / "coarse" / "log.json", run_dir / "coarse" / "log.json")]
    assert strip[0] == strip[1]
    assert not list((run_dir / "coarse").rglob("*.tmp")), "temporaries of the killed run remain"


@pytest.mark.slow
def test_sigkill_mid_feature_extraction_resumes(reference: Path, resumed: tuple) -> None:
    run_dir, _ = resumed
    kill_when(["analyze"], run_dir, ready=run_dir / "coarse" / "features" / "epoch_000.npz")
    assert not (run_dir / "results.json").exists()
    nbutils("analyze", run_dir=run_dir)
    assert comparable(runs.load_json(run_dir / "results.json")) == comparable(
        runs.load_json(reference / "results.json"))


def test_sigkill_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = runs.save_json(tmp_path / "results.json", {"old": True})
    writer = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from nbutils.runs import atomic_write\n"
        "def write(tmp):\n"
        "    tmp.write_text('{\"new\": tr')\n"
        "    print('half written', flush=True)\n"
        "    time.sleep(120)\n"
        "atomic_write(Path(sys.argv[1]), write)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(target)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "half written"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert runs.load_json(target) == {"old": True}
    assert runs.clear_temporaries(tmp_path), "the killed writer's temporary should be there"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.slow
def test_resume_restores_the_global_rng(tmp_path: Path, fake_cache: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Training that draws from the global RNG (as dropout would) still resumes exactly."""
    real_augment = train_mod.augment
    calls = {"n": 0, "kill_at": None}

    def noisy_augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == calls["kill_at"]:
            raise KeyboardInterrupt("killed in epoch 2")
        out = real_augment(batch, generator)
        return out * (torch.rand(out.shape[0], 1, 1, 1) < 0.9)

    monkeypatch.setattr(train_mod, "augment", noisy_augment)
    full = tiny_cfg(tmp_path / "full", fake_cache, epochs=3, checkpoint_epochs=[0, 3])
    train_model(full, "coarse", progress=False)
    cut = tiny_cfg(tmp_path / "cut", fake_cache, epochs=3, checkpoint_epochs=[0, 3])
    calls.update(n=0, kill_at=2)  # one batch per epoch on the fake cache
    with pytest.raises(KeyboardInterrupt):
        train_model(cut, "coarse", progress=False)
    calls["kill_at"] = None
    torch.manual_seed(12345)  # a fresh process's global RNG is anywhere
    train_model(cut, "coarse", progress=False)
    a, b = (runs.load_torch(Path(c.run_dir) / "coarse" / "last.pt") for c in (full, cut))
    assert not tensor_differences(a["model"], b["model"])


@pytest.mark.slow
def test_kill_before_the_last_log_write_is_repaired(tmp_path: Path, fake_cache: Path) -> None:
    cfg = tiny_cfg(tmp_path, fake_cache)
    log = train_model(cfg, "coarse", progress=False)
    (Path(cfg.run_dir) / "coarse" / "log.json").unlink()
    assert train_model(cfg, "coarse", progress=False) == log
    assert runs.load_json(Path(cfg.run_dir) / "coarse" / "log.json") == log


def test_notebook_01_and_reproduce_pass_resume() -> None:
    nb = nbformat.read(REPO / "notebooks" / "01_train.ipynb", as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert re.search(r"^resume: bool = True", source, re.M)
    assert "stages.train(cfg, run_data, resume=resume)" in source
    cfg = resolve("ci")
    assert reproduce.notebook_parameters(cfg, "01_train", {}, resume=False)["resume"] is False
    parser = cli.build_parser()
    assert parser.parse_args(["train", "--resume"]).resume is True
    assert parser.parse_args(["train", "--no-resume"]).resume is False
    assert parser.parse_args(["reproduce", "--no-resume"]).resume is False


@pytest.mark.slow
def test_same_seed_gives_identical_results(reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    nbutils("train", run_dir=run_dir)
    nbutils("analyze", run_dir=run_dir)
    first, second = (runs.load_json(d / "results.json") for d in (reference, run_dir))
    assert comparable(first) == comparable(second)
