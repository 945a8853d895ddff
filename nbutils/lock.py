"""One writer per run directory: an advisory file lock that names its holder and outlives no one.

`run_lock(run_dir)` holds `<run_dir>/.lock` for the duration of a `with` block; a second process
fails fast with RunLocked naming the holder (PID, host, start time); a lock left by a process that
no longer runs is taken over. Nested use in one process is allowed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nbutils.runs import FILE_MODE

LOCK_NAME = ".lock"
# (pid, lock file) -> nesting depth of run_lock in this process; the pid keeps a forked child
# from believing it inherited its parent's lock.
_HELD: dict[tuple[int, str], int] = {}


class RunLocked(RuntimeError):
    """Another live process holds the run directory's lock."""


def _lock_record() -> bytes:
    """This process's lock file contents: PID, hostname and start time (JSON)."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
    return (json.dumps(record) + "\n").encode()


def _read_record(fd: int) -> dict[str, Any]:
    """The holder's record from an open lock file; {} when unreadable."""
    try:
        record = json.loads(os.pread(fd, 4096, 0))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _holder(record: dict[str, Any]) -> str:
    """PID, host and start time of a lock record, in words."""
    return (f"PID {record.get('pid', '?')} on {record.get('host', '?')} "
            f"(started {record.get('started', '?')})")


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _new_lock_file(path: Path) -> tuple[int, Path]:
    """A locked, filled lock file under a temporary name beside `path`, not yet in place."""
    fd, tmp = tempfile.mkstemp(prefix=f"{LOCK_NAME}.", suffix=".new", dir=path.parent)
    # The kernel drops a flock when its process ends, kill -9 included: that marks a stale lock.
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, _lock_record())
    os.fchmod(fd, FILE_MODE)
    os.set_inheritable(fd, False)
    return fd, Path(tmp)


def _replace_if_stale(path: Path, new: Path) -> bool:
    """Move `new` over a lock whose holder is gone; RunLocked if it is alive, False if it left."""
    try:
        old = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(old, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(
                f"run directory {path.parent} is in use by {_holder(_read_record(old))}; "
                f"lock file {path}. Wait for that process to finish or stop it."
            ) from None
        if not _same_file(old, path):
            return False
        # Holding the dead holder's flock makes this check-and-replace atomic for other takers.
        os.replace(new, path)
        print(f"run_lock: took over the stale lock {path} of {_holder(_read_record(old))}, "
              "which is no longer running", file=sys.stderr)
        return True
    finally:
        os.close(old)


def _acquire(path: Path) -> int:
    """Put a lock file of this process at `path`; returns its open, flocked descriptor."""
    fd, new = _new_lock_file(path)
    try:
        while True:
            try:
                # link() creates `path` atomically, as O_CREAT|O_EXCL would, but already filled.
                os.link(new, path)
                return fd
            except FileExistsError:
                if _replace_if_stale(path, new):
                    return fd
    except BaseException:
        os.close(fd)
        raise
    finally:
        new.unlink(missing_ok=True)


@contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold `run_dir/.lock` (PID, host, start time) so that one process at a time writes the run.

    Another process gets RunLocked naming the holder's PID. A lock whose process has died (its
    PID no longer alive; the kernel then drops the flock it held, kill -9 included) is taken
    over with a note on stderr. Nested use in one process is fine; the lock goes when the
    outermost block exits, by exception too.
    """
    root = Path(run_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"run_dir: {root} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    key = (os.getpid(), os.path.realpath(path))
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield path
        finally:
            _HELD[key] -= 1
        return
    fd = _acquire(path)
    _HELD[key] = 1
    try:
        yield path
    finally:
        del _HELD[key]
        # Unlink before unlocking: a taker that opened this file then sees it is no longer the lock.
        if _same_file(fd, path):
            path.unlink()
        os.close(fd)
