"""Recorded runs: a run directory records its config, versions and commit, and refuses another
config unless forced (docs/reliability.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nbutils import __main__ as cli
from nbutils import runs
from nbutils.config import resolve
from nbutils.runs import RunConfigMismatch

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


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
