"""run_lock: one writer per run directory, across real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbutils.lock import LOCK_NAME, RunLocked, run_lock

HOLD = """
import sys, time
from nbutils.lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""
RACE = """
import os, sys, time
from nbutils.lock import run_lock
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(2)
"""
TAKE = """
import sys, time
from nbutils.lock import RunLocked, run_lock
start = time.perf_counter()
try:
    with run_lock(sys.argv[1]):
        print("took", flush=True)
except RunLocked as err:
    print(f"refused after {time.perf_counter() - start:.3f} s: {err}", flush=True)
    sys.exit(3)
"""


def start_holder(run_dir: Path, seconds: float = 60) -> subprocess.Popen:
    """A python process that takes the lock of run_dir, says so, and sleeps."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.fixture
def holder(tmp_path: Path):
    """A live holder of tmp_path/run's lock, killed at the end."""
    proc = start_holder(tmp_path / "run")
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_lock_file_records_pid_host_and_start(tmp_path: Path) -> None:
    with run_lock(tmp_path / "run") as path:
        record = json.loads(path.read_text())
        assert path == tmp_path / "run" / LOCK_NAME
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["started"]
    assert not path.exists()
    assert [p.name for p in (tmp_path / "run").iterdir()] == []


def test_released_on_exception(tmp_path: Path) -> None:
    with pytest.raises(KeyError), run_lock(tmp_path) as path:
        raise KeyError("boom")
    assert not path.exists()
    with run_lock(tmp_path):
        pass


def test_reentrant_in_one_process(tmp_path: Path) -> None:
    with run_lock(tmp_path) as outer:
        with run_lock(tmp_path) as inner:
            assert inner == outer
        assert outer.exists()
    assert not outer.exists()


def test_second_process_fails_fast_naming_the_holder(tmp_path: Path, holder) -> None:
    taker = subprocess.run([sys.executable, "-c", TAKE, str(tmp_path / "run")],
                           capture_output=True, text=True, timeout=120)
    assert taker.returncode == 3, taker.stderr
    seconds = float(taker.stdout.split()[2])
    assert seconds < 1.0
    assert f"PID {holder.pid}" in taker.stdout
    assert str(tmp_path / "run" / LOCK_NAME) in taker.stdout
    with pytest.raises(RunLocked, match=f"PID {holder.pid} on"):
        with run_lock(tmp_path / "run"):
            pass
    assert holder.poll() is None


def test_lock_of_a_killed_holder_is_taken_over(tmp_path: Path, holder,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with run_lock(tmp_path / "run") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    err = capfd.readouterr().err
    assert "took over the stale lock" in err and f"PID {holder.pid}" in err


def test_leftover_lock_file_is_stale(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / LOCK_NAME).write_text('{"pid": 999999999, "host": "h", "started": "t"}\n')
    with run_lock(tmp_path):
        pass
    assert "PID 999999999" in capfd.readouterr().err


def test_one_of_several_racing_takers_wins(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text("")
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path / "run"), str(go)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
              for _ in range(3)]
    # All start together once imported, so the winner still holds the lock when the rest try.
    assert [p.stdout.readline().strip() for p in racers] == ["ready"] * 3
    go.touch()
    deadline = time.monotonic() + 60
    for proc in racers:
        proc.wait(timeout=max(deadline - time.monotonic(), 1))
    winners = [p for p in racers if p.stdout.read().strip() == "locked"]
    assert len(winners) == 1 and winners[0].returncode == 0
    assert sorted(p.returncode for p in racers) == [0, 1, 1]


def test_run_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="run_dir: .* is not a directory"):
        with run_lock(tmp_path / "f"):
            pass
