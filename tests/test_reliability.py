"""Reliability: kill and resume, atomic artifacts, recorded runs, bad input, determinism and
failing notebooks (docs/reliability.md)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from nbutils import __main__ as cli
from nbutils import reproduce, runs
from nbutils import train as train_mod
from nbutils.config import PARAMETERS, resolve
from nbutils.data import DataError, Split, save_cache
from nbutils.distributed import check_world, preflight
from nbutils.features import extract_run
from nbutils.run_data import load_run_data
from nbutils.runs import ArtifactError, RunConfigMismatch
from nbutils.train import train_model

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NBUTILS_DATA") or REPO.parent / "shared" / "data" / "cifar10")
DOC = REPO / "docs" / "reliability.md"
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


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> object:
    """Train the tiny in-process models on one thread: on a busy machine more only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



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


def tiny_cfg(tmp_path: Path, data_root: Path, **params):
    """A config that trains in about a second on a fake cache."""
    base = dict(run_dir=str(tmp_path / "run"), data_root=str(data_root), width=2, epochs=2,
                train_per_class=4, test_per_class=2, checkpoint_epochs=[0, 2],
                train_baseline=False, amp="off", device="cpu")
    return resolve("ci", **{**base, **params})


def doc_text() -> str:
    """docs/reliability.md."""
    return DOC.read_text()


# --------------------------------------------------------------------------- 1. kill and resume


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


# --------------------------------------------------------------------------- 2. atomic artifacts


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


# --------------------------------------------------------------------------- 3. recorded runs


def test_run_dir_records_config_versions_and_commit(tmp_path: Path) -> None:
    cfg = resolve("ci", run_dir=str(tmp_path / "run"))
    runs.create_run(cfg)
    record = runs.load_json(tmp_path / "run" / "config.json")
    assert record["config"] == cfg.to_dict()
    for lib in ("python", "nbutils", "torch", "numpy", "scipy", "scikit-learn"):
        assert record["versions"][lib], lib
    if (REPO / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", record["git_commit"] or "")


def test_different_config_is_refused_unless_forced(tmp_path: Path) -> None:
    root = tmp_path / "run"
    runs.create_run(resolve("ci", run_dir=str(root)))
    (root / "coarse").mkdir()
    (root / "coarse" / "last.pt").write_bytes(b"old state")
    other = resolve("ci", run_dir=str(root), width=4, lr=0.05)
    with pytest.raises(RunConfigMismatch) as err:
        runs.create_run(other)
    assert "width: 8 -> 4" in str(err.value) and "lr: 0.1 -> 0.05" in str(err.value)
    assert "--force" in str(err.value)
    assert runs.load_json(root / "config.json")["config"]["width"] == 8
    runs.create_run(resolve("ci", run_dir=str(root), n_init=3))  # analysis-only: no refusal
    runs.create_run(other, force=True)
    assert runs.load_json(root / "config.json")["config"]["width"] == 4
    assert not (root / "coarse").exists(), "stale checkpoints must not survive --force"


@pytest.mark.slow
def test_cli_refuses_different_config_unless_forced(tmp_path: Path, fake_cache: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    args = ["train", "--profile", "ci", "--run-dir", str(run_dir), "--data-root", str(fake_cache),
            "--epochs", "1", "--width", "2", "--set", "train_per_class=4", "--set",
            "test_per_class=2", "--set", "train_baseline=false", "--set", "amp=off",
            "--no-progress"]
    assert cli.main(args) == 0
    assert cli.main([*args, "--width", "3"]) == 2
    err = capsys.readouterr().err
    assert "width: 2 -> 3" in err and "--force" in err
    assert runs.load_json(run_dir / "config.json")["config"]["width"] == 2
    assert cli.main([*args, "--width", "3", "--force"]) == 0
    assert runs.load_json(run_dir / "config.json")["config"]["width"] == 3
    assert runs.load_torch(run_dir / "coarse" / "last.pt")["model"]["stem.0.weight"].shape[0] == 3


# --------------------------------------------------------------------------- 4. bad input

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


# --------------------------------------------------------------------------- 5. determinism


@pytest.mark.slow
def test_same_seed_gives_identical_results(reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    nbutils("train", run_dir=run_dir)
    nbutils("analyze", run_dir=run_dir)
    first, second = (runs.load_json(d / "results.json") for d in (reference, run_dir))
    assert comparable(first) == comparable(second)


# --------------------------------------------------------------------------- 6. failing notebooks


def failing_notebook(folder: Path) -> Path:
    """A notebook with a parameters cell whose third cell raises."""
    from nbformat.v4 import new_code_cell, new_notebook

    params = new_code_cell('profile = "ci"\nrun_dir = None\ndata_root = None')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell("x = 1"),
                             new_code_cell("raise ValueError('boom in the third cell')"),
                             new_code_cell("never = True")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "99_fails.ipynb")
    return folder / "99_fails.ipynb"


@pytest.mark.slow
def test_failing_notebook_stops_reproduce(tmp_path: Path, fake_cache: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    failing_notebook(tmp_path / "notebooks")
    monkeypatch.setattr(reproduce, "NOTEBOOK_DIR", tmp_path / "notebooks")
    monkeypatch.setattr(reproduce, "NOTEBOOKS", ("99_fails", "01_train"))
    run_dir = tmp_path / "run"
    code = cli.main(["reproduce", "--profile", "ci", "--run-dir", str(run_dir), "--data-root",
                     str(fake_cache), "--set", "train_per_class=4", "--set", "test_per_class=2"])
    err = capsys.readouterr().err
    assert code != 0
    assert "99_fails.ipynb failed at In [4]" in err and "ValueError: boom in the third cell" in err
    kept = run_dir / "notebooks" / "99_fails.ipynb"
    assert str(kept) in err
    cells = nbformat.read(kept, as_version=4).cells
    assert any(o.get("ename") == "ValueError" for c in cells for o in c.get("outputs", []))
    assert cells[-1].execution_count is None, "cells after the failing one must not run"
    assert not (run_dir / "notebooks" / "01_train.ipynb").exists(), "the run must stop"
