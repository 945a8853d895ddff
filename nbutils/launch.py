"""Launchers: run a picklable call once per argument in this process, in local processes, or
as Slurm jobs, through submitit.

`inline` calls the function in this process, one argument after the other. `local` runs each
call as its own process on this machine (submitit's LocalExecutor), at most `jobs` at a time,
each with its share of the CPU threads and, where GPUs are visible, one of them. `slurm` submits
one Slurm array job with a task per argument. Both write their logs under
`<root>/.submitit/<job id>/`; what the calls write (e.g. run directories) is the same whichever
launcher ran them. Multi-GPU training of one run is torchrun's business (docs/gpu.md), not this.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
import torch
from submitit.core.utils import FailedJobError
from submitit.slurm.slurm import SlurmExecutor

from nbutils import checks
from nbutils.paths import resolve_run_dir
from nbutils.progress import tqdm

LAUNCHERS = ("local", "slurm", "inline")
LOG_DIR = ".submitit"
# How often the state of running jobs is read (submitit itself rate-limits Slurm's sacct).
POLL_S = 0.5
# Each redraw of a text bar is a line in a headless notebook's output: an unchanged bar is
# redrawn (its elapsed time) once a minute, not at every poll.
REDRAW_S = 60.0
# submitit's local default stops a job after 2 minutes; a training here has no time limit.
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
# Our names for submitit's generic parameters (one job = one task on one node).
SLURM_GENERIC = {"gpus_per_job": "gpus_per_node", "cpus_per_task": "cpus_per_task",
                 "mem_gb": "mem_gb", "timeout_min": "timeout_min", "name": "name"}
# Slurm's own names for what SLURM_GENERIC sets, and the multi-task layouts a point never uses.
SLURM_REFUSED = {"gpus_per_node", "time", "mem", "job_name", "nodes", "ntasks_per_node",
                 "gpus_per_task", "num_gpus"}
SLURM_KEYS = (*SLURM_GENERIC,
              *sorted(SlurmExecutor._valid_parameters() - SLURM_REFUSED - set(SLURM_GENERIC)))
SLURM_DEFAULTS = {"gpus_per_job": 1, "cpus_per_task": 8, "timeout_min": 24 * 60,
                  "name": "nbutils"}
# The least value of each integer Slurm parameter.
SLURM_INTS = {"gpus_per_job": 0, "cpus_per_task": 1, "timeout_min": 1, "array_parallelism": 1}


def slurm_dict(slurm: dict[str, Any] | str | None) -> dict[str, Any]:
    """`slurm` as a dict; papermill's `-p slurm '{...}'` passes it as JSON text."""
    if slurm in (None, ""):
        return {}
    if isinstance(slurm, str):
        try:
            slurm = json.loads(slurm)
        except ValueError:
            raise ValueError(f"slurm: must be a dict or its JSON text, got {slurm!r}") from None
    if not isinstance(slurm, dict):
        raise ValueError(f"slurm: must be a dict of Slurm parameters, got {slurm!r}")
    return slurm


def slurm_parameters(slurm: dict[str, Any] | str | None) -> dict[str, Any]:
    """submitit AutoExecutor parameters of a `slurm` dict (SLURM_DEFAULTS filled in), checked."""
    given = slurm_dict(slurm)
    unknown = sorted(set(given) - set(SLURM_KEYS))
    if unknown:
        raise ValueError(f"slurm: unknown key(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(SLURM_KEYS)}")
    merged = {**SLURM_DEFAULTS, **given}
    for key, least in SLURM_INTS.items():
        if key in merged:
            checks.integer(f"slurm[{key!r}]", merged[key], least=least)
    if "mem_gb" in merged:
        checks.number("slurm['mem_gb']", merged["mem_gb"], positive=True)
    if merged["gpus_per_job"] == 0:
        # A CPU partition may know no GPU resource at all: ask for none rather than for 0.
        del merged["gpus_per_job"]
    if not isinstance(merged["name"], str) or not merged["name"]:
        raise ValueError(f"slurm['name']: must be a non-empty string, got {merged['name']!r}")
    return {SLURM_GENERIC.get(k, f"slurm_{k}"): v for k, v in merged.items()}


def check(launcher: str, jobs: int = 1, slurm: dict[str, Any] | str | None = None) -> None:
    """Refuse a bad launcher, job count or Slurm parameters, naming the parameter."""
    checks.choice("launcher", launcher, LAUNCHERS)
    checks.positive_int("jobs", jobs)
    if jobs != 1 and launcher != "local":
        raise ValueError(f"jobs: only launcher 'local' runs calls side by side, got jobs={jobs} "
                         f"with launcher {launcher!r}; on Slurm set slurm['array_parallelism']")
    if launcher == "slurm":
        slurm_parameters(slurm)
    elif slurm_dict(slurm):
        raise ValueError(f"slurm: only used with launcher 'slurm', got {slurm!r} with "
                         f"launcher {launcher!r}")


def log_folder(root: str | Path) -> Path:
    """Where submitit keeps each job's pickles and logs: `<root>/.submitit/<job id>`."""
    return resolve_run_dir(root) / LOG_DIR / "%j"


def slurm_executor(root: str | Path, slurm: dict[str, Any] | str | None) -> submitit.Executor:
    """A Slurm executor with the sweep's parameters and logs under `root`."""
    executor = submitit.AutoExecutor(folder=log_folder(root), cluster="slurm")
    executor.update_parameters(stderr_to_stdout=True, **slurm_parameters(slurm))
    return executor


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass(frozen=True)
class InSlot:
    """`fn` in local job slot: the slot's GPU and its share of the CPU threads, then the call."""

    fn: Callable[[Any], Any]
    gpu: str
    threads: int | None

    def __call__(self, arg: Any) -> Any:
        """Set the slot up in this (new) process, before anything starts CUDA; then `fn(arg)`."""
        # submitit hides every GPU from a local job; set here, not through its shell `setup`,
        # whose job folder is wrong where /bin/sh execs the last command (bash).
        os.environ["CUDA_VISIBLE_DEVICES"] = self.gpu
        if self.threads is not None:
            # umap's numba runs on the OpenMP runtime torch shares and, at its first parallel
            # call, would reset it to a thread per core unless told the slot's share.
            os.environ["NUMBA_NUM_THREADS"] = str(self.threads)
            torch.set_num_threads(self.threads)
        return self.fn(arg)


def in_slot(fn: Callable[[Any], Any], slot: int, jobs: int, gpus: Sequence[str]) -> InSlot:
    """`fn` for local slot `slot` of `jobs`: a slot keeps one GPU, round robin over `gpus`."""
    # Each process would otherwise start a thread per core: `jobs` of them oversubscribe.
    threads = (None if "OMP_NUM_THREADS" in os.environ
               else max(1, len(os.sched_getaffinity(0)) // jobs))
    return InSlot(fn, gpus[slot % len(gpus)] if gpus else "", threads)


def tick(bar: Any, submitted: list[submitit.Job], drawn: float = -math.inf) -> float:
    """Show how many jobs are done: at once when it changes, else every REDRAW_S; when drawn."""
    done = sum(job.done() for job in submitted)
    now = time.monotonic()
    if done == bar.n and now - drawn < REDRAW_S:
        return drawn
    bar.n = done
    bar.refresh()
    return now


def wait(submitted: list[submitit.Job], bar: Any, running: int = 0) -> None:
    """Poll until at most `running` of the submitted jobs are still running."""
    drawn = -math.inf
    while sum(not job.done() for job in submitted) > running:
        drawn = tick(bar, submitted, drawn)
        time.sleep(POLL_S)
    tick(bar, submitted)


def submit_local(fn: Callable[[Any], Any], args: list[Any], root: str | Path, jobs: int,
                 bar: Any) -> list[submitit.Job]:
    """Run `fn(arg)` as local processes, at most `jobs` at a time; the jobs, all finished."""
    executor = submitit.LocalExecutor(folder=log_folder(root))
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, stderr_to_stdout=True)
    gpus = visible_gpus()
    slots: list[submitit.Job | None] = [None] * jobs
    submitted: list[submitit.Job] = []
    try:
        for arg in args:
            wait(submitted, bar, running=jobs - 1)
            slot = next(i for i, job in enumerate(slots) if job is None or job.done())
            slots[slot] = executor.submit(in_slot(fn, slot, jobs, gpus), arg)
            submitted.append(slots[slot])
        wait(submitted, bar)
    except KeyboardInterrupt:
        # These processes belong to this session: stopping it stops them (and frees their runs).
        for job in submitted:
            job.cancel(check=False)
        raise
    return submitted


def submit_slurm(fn: Callable[[Any], Any], args: list[Any], root: str | Path,
                 slurm: dict[str, Any] | str | None, bar: Any) -> list[submitit.Job]:
    """Submit `fn(arg)` as one Slurm array job; the jobs, all finished."""
    submitted = slurm_executor(root, slurm).map_array(fn, args)
    print(f"submitted Slurm job {submitted[0].job_id.split('_')[0]} ({len(args)} tasks); "
          f"logs in {log_folder(root).parent}")
    # Interrupting the wait leaves the jobs running: calling again waits for them.
    wait(submitted, bar)
    return submitted


def label(arg: Any) -> str:
    """A call's argument in a failure report: a config's run directory, else its repr."""
    return str(getattr(arg, "run_dir", None) or repr(arg))


def reason(err: Exception) -> str:
    """Why a job failed, in one line: its exception, without submitit's trace and paths."""
    parts = str(err).split("\n" + "-" * 22)
    # A FailedJobError is header, trace, footer; anything else (e.g. a killed job) a message.
    text = parts[1] if isinstance(err, FailedJobError) and len(parts) > 2 else parts[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[-1:] if isinstance(err, FailedJobError) else lines[:2]) or repr(err)


def outcomes(submitted: list[submitit.Job], names: list[str]) -> list[Any]:
    """Every job's return value; RuntimeError naming each failed one and its log."""
    values, failed = [], []
    for job, name in zip(submitted, names, strict=True):
        try:
            values.append(job.result())
        except Exception as err:  # submitit re-raises the job's error as FailedJobError
            failed.append(f"  {name}: {reason(err)} (log: {job.paths.stdout})")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(submitted)} jobs failed:\n" + "\n".join(failed))
    return values


def run_jobs(fn: Callable[[Any], Any], args: list[Any], root: str | Path,
             launcher: str = "local", jobs: int = 1, slurm: dict[str, Any] | str | None = None,
             progress: bool = True, desc: str = "jobs") -> list[Any]:
    """`fn(arg)` for every arg through `launcher` (LAUNCHERS); the return values, in order.

    Logs of `local` and `slurm` jobs go to `<root>/.submitit/<job id>/` (a relative `root`
    resolves as a run directory does).

    `fn` must be picklable (a module-level function or a functools.partial of one) for
    `local` and `slurm`. `jobs` (local only) is how many calls run at once; `slurm` takes
    SLURM_KEYS, e.g. partition, gpus_per_job, cpus_per_task, mem_gb, timeout_min,
    array_parallelism, account, qos, setup (shell lines run before the job, such as
    activating an environment). A failed call does not stop the others; all are waited for,
    then RuntimeError lists the failures.
    """
    check(launcher, jobs, slurm)
    checks.flag("progress", progress)
    if launcher == "inline":
        return [fn(arg) for arg in tqdm(args, desc=desc, unit="job", disable=not progress)]
    if not args:
        return []
    with tqdm(total=len(args), desc=desc, unit="job", disable=not progress) as bar:
        submitted = (submit_local(fn, args, root, jobs, bar) if launcher == "local"
                     else submit_slurm(fn, args, root, slurm, bar))
    return outcomes(submitted, [label(arg) for arg in args])
