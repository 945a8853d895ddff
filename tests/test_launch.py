"""Launchers (docs/cluster.md): sweeps through submitit's local executor, each point run once;
a point another process is running is waited for, not submitted; Slurm job scripts; bad
launch parameters refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from submitit.slurm.slurm import SlurmExecutor

from nbutils import launch, sweeps

REPO = Path(__file__).resolve().parents[1]
POINTS = [{"seed": 0}, {"seed": 1}]
# Holds a point's lock, as a job of an earlier sweep would, and runs it.
HOLDER = """
import json, sys
from pathlib import Path
from nbutils import sweeps
from nbutils.config import RunConfig
from nbutils.lock import run_lock
cfg = RunConfig(**json.loads(sys.argv[1]))
with run_lock(cfg.run_dir):
    Path(sys.argv[2]).touch()
    sweeps.run_point(cfg)
"""


def tiny(data_root: Path) -> dict:
    """Sweep parameters that train a point in seconds on a fake cache."""
    return dict(data_root=str(data_root), width=2, epochs=1, train_per_class=4,
                test_per_class=2, checkpoint_epochs=[0, 1], train_baseline=False, amp="off",
                device="cpu", n_init=2)


def job_dirs(root: Path) -> list[str]:
    """The job folders submitit made under the sweep root."""
    logs = root / launch.LOG_DIR
    return sorted(p.name for p in logs.iterdir() if p.name != "%j") if logs.is_dir() else []


@pytest.mark.parametrize("params, match", [
    ({"launcher": "cloud"}, "launcher: unknown value 'cloud'; allowed: local, slurm, inline"),
    ({"jobs": 0}, "jobs"),
    ({"jobs": 2, "launcher": "inline"}, "jobs: only launcher 'local'"),
    ({"jobs": 2, "launcher": "slurm"}, "array_parallelism"),
    ({"slurm": {"partition": "gpu"}}, "slurm: only used with launcher 'slurm'"),
    ({"launcher": "slurm", "slurm": {"partitoin": "gpu"}}, "unknown key.*partitoin.*partition"),
    ({"launcher": "slurm", "slurm": {"nodes": 2}}, "unknown key.*nodes"),
    ({"launcher": "slurm", "slurm": {"gpus_per_job": -1}}, "gpus_per_job"),
    ({"launcher": "slurm", "slurm": {"mem_gb": "16G"}}, "mem_gb"),
    ({"launcher": "slurm", "slurm": {"name": ""}}, "name"),
    ({"launcher": "slurm", "slurm": "{partition: gpu}"}, "JSON"),
    ({"launcher": "slurm", "slurm": ["gpu"]}, "slurm: must be a dict"),
])
def test_bad_launch_parameters_are_refused_before_any_work(tmp_path: Path, params: dict,
                                                          match: str) -> None:
    root = tmp_path / "sweep"
    with pytest.raises(ValueError, match=match):
        sweeps.run_sweep(POINTS, "ci", root, progress=False, **params)
    calls: list = []
    with pytest.raises(ValueError, match=match):
        launch.run_jobs(calls.append, [1], root, progress=False, **params)
    assert not root.exists() and not calls


def test_slurm_parameters_reach_the_job_script_and_logs_go_under_the_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No srun on this machine: let submitit build the script it would submit.
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    slurm = json.dumps({"partition": "gpu", "gpus_per_job": 2, "mem_gb": 32, "timeout_min": 600,
                        "array_parallelism": 4, "setup": ["source .venv/bin/activate"]})
    executor = launch.slurm_executor(tmp_path / "sweep", slurm)
    text = executor._executor._make_submission_file_text("CMD", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--mem=32GB", "--time=600",
                 "--cpus-per-task=8", f"--output={tmp_path}/sweep/.submitit/%j/",
                 "source .venv/bin/activate"):
        assert line in text
    assert executor._executor.parameters["array_parallelism"] == 4
    cpu = launch.slurm_parameters({"gpus_per_job": 0})
    assert "gpus_per_node" not in cpu and cpu["timeout_min"] == 24 * 60


def test_pytest_workers_start_with_their_share_of_the_threads() -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if "PYTEST_XDIST_WORKER" not in os.environ or workers < 2:
        pytest.skip("not under two or more pytest-xdist workers")
    share = str(max(1, (os.cpu_count() or 1) // workers))
    assert [os.environ.get(v) for v in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")] == [share] * 2
    assert torch.get_num_threads() == int(share)


def test_local_slots_get_one_gpu_each_and_a_share_of_the_threads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    slots = [launch.in_slot(print, s, 4, ["3", "5"]) for s in range(4)]
    assert [s.gpu for s in slots] == ["3", "5", "3", "5"] and slots[0].threads == 2
    assert launch.in_slot(print, 0, 1, []).gpu == ""
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert launch.in_slot(print, 0, 4, []).threads is None


def test_a_slot_gives_numba_and_torch_its_share_of_the_threads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_NUM_THREADS", "99")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    before = torch.get_num_threads()
    try:
        seen = launch.InSlot(lambda _: (os.environ["NUMBA_NUM_THREADS"], torch.get_num_threads()),
                             "", 1)(None)
    finally:
        torch.set_num_threads(before)
    assert seen == ("1", 1)


def test_local_jobs_see_their_gpu_and_failures_are_reported_after_all_ran(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    seen = launch.run_jobs(os.getenv, ["CUDA_VISIBLE_DEVICES"] * 2, tmp_path, jobs=2,
                           progress=False)
    assert seen == ["3", "5"]
    with pytest.raises(RuntimeError, match=r"1 of 3 jobs failed:\n  'x': ValueError: invalid "
                                           r"literal.*\(log: .*_log\.out\)"):
        launch.run_jobs(int, ["1", "x", "3"], tmp_path, jobs=2, progress=False)
    assert len(job_dirs(tmp_path)) == 5


@pytest.mark.slow
def test_local_sweep_runs_each_point_once(tmp_path: Path, fake_cache: Path) -> None:
    root = tmp_path / "sweep"
    first = sweeps.run_sweep(POINTS, "ci", root, progress=False, jobs=2, **tiny(fake_cache))
    cfgs = sweeps.sweep_configs(POINTS, "ci", root, **tiny(fake_cache))
    assert all((Path(c.run_dir) / "results.json").is_file() for c in cfgs)
    assert [r["config"]["seed"] for r in first] == [0, 1]
    assert len(job_dirs(root)) == 2
    again = sweeps.run_sweep(POINTS, "ci", root, progress=False, jobs=2, **tiny(fake_cache))
    assert again == first and len(job_dirs(root)) == 2


@pytest.mark.slow
def test_a_point_another_process_runs_is_waited_for_not_submitted(
        tmp_path: Path, fake_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweeps, "WAIT_S", 0.2)
    root = tmp_path / "sweep"
    cfg = sweeps.sweep_configs(POINTS[:1], "ci", root, **tiny(fake_cache))[0]
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps(cfg.to_dict()),
                               str(ready)], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not ready.exists() and holder.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the holder never took the lock"
    [res] = sweeps.run_sweep(POINTS[:1], "ci", root, progress=False, **tiny(fake_cache))
    assert holder.wait(timeout=120) == 0
    assert res["config"]["seed"] == 0 and job_dirs(root) == []


def test_an_unchanged_sweep_bar_is_redrawn_once_a_minute_not_at_every_poll(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Job:
        def __init__(self, done: bool) -> None:
            self.finished = done

        def done(self) -> bool:
            return self.finished

    class Bar:
        n, draws = 0, 0

        def refresh(self) -> None:
            self.draws += 1

    clock = iter([0.0, 1.0, 30.0, 61.0, 62.0])
    monkeypatch.setattr(launch.time, "monotonic", lambda: next(clock))
    bar, jobs = Bar(), [Job(False), Job(False)]
    drawn = launch.tick(bar, jobs)
    for _ in range(2):
        drawn = launch.tick(bar, jobs, drawn)
    assert (bar.draws, drawn) == (1, 0.0)
    drawn = launch.tick(bar, jobs, drawn)
    assert (bar.draws, drawn) == (2, 61.0)
    jobs[0].finished = True
    assert (launch.tick(bar, jobs, drawn), bar.n, bar.draws) == (62.0, 1, 3)
