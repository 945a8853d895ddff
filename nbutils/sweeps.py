"""Sweeps: the pipeline's stages once per parameter set, each point in its own run directory.

A run directory is named after mapping, learning rate, weight decay and seed (plus any other
parameter a point sets), e.g. `mapping=mod5_lr=0.1_weight_decay=0.0005_seed=0`, under a root shared
by one setting, so experiments asking for the same run share it: a run whose results.json was made
with the same configuration is read back, not trained again.

Each point not yet finished is one job of `nbutils.launch` (in this process, in local processes
or on Slurm, docs/cluster.md); the results are read back from the runs' results.json, so a
sweep that was stopped resumes where it was when it is called again. With an `archive`, each
finished point's small records also go to `<archive>/<run name>/`, e.g. in the repository, so
the sweep resumes on a machine that lacks the run directories.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from nbutils import checks, launch, stages
from nbutils.config import TRAINING_KEYS, RunConfig, resolve
from nbutils.data import DataError, coarse_mapping
from nbutils.lock import RunLocked, run_lock
from nbutils.paths import resolve_run_dir
from nbutils.runs import (
    checkpoint_path,
    create_run,
    load_json,
    model_dir,
    save_json,
    save_npz,
)

# Always in a run's name, so that the grid, the hierarchies and the dynamics share their runs.
NAME_KEYS = ("mapping", "lr", "weight_decay", "seed")
# What a run's results depend on: training and the analysis of notebooks 02-04. Where it lives,
# which data copy it reads and how it is executed (e.g. torch.compile) do not change them.
RESULT_KEYS = (*TRAINING_KEYS, "profile", "n_init", "feature_norm")
# Result keys added after runs were archived, with the value every run before them trained with:
# before the `augment` switch, every run trained with crop and flip.
BEFORE_RECORDED = {"augment": True}
# How often a point run by another process is checked on.
WAIT_S = 10.0


def _name_value(value: Any) -> str:
    """A value as it reads in a run's name: a list's items joined by '-' (lr drops 0.15-0.3)."""
    return "-".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def run_name(cfg: RunConfig, point: dict[str, Any]) -> str:
    """Directory name of one sweep point: NAME_KEYS, then the point's other keys; path-safe."""
    values = cfg.to_dict()
    keys = (*NAME_KEYS, *(k for k in point if k not in NAME_KEYS))
    text = "_".join(f"{k}={_name_value(values[k])}" for k in keys)
    return re.sub(r"[^A-Za-z0-9.=_-]+", "-", text)


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The RESULT_KEYS of a config (a key it lacks: its BEFORE_RECORDED value, else None).

    The lr drops are compared only under the step schedule, the one that reads them.
    """
    out = {k: config.get(k, BEFORE_RECORDED.get(k)) for k in RESULT_KEYS}
    if out["schedule"] != "step":
        out["step_milestones"] = None
    return out


def finished(cfg: RunConfig) -> dict[str, Any] | None:
    """The run's results.json when it exists and was made with exactly this configuration."""
    path = Path(cfg.run_dir) / "results.json"
    if not path.is_file():
        return None
    res = load_json(path)
    return res if comparable(res.get("config", {})) == comparable(cfg.to_dict()) else None


def sweep_configs(
    points: list[dict[str, Any]], profile: str, root: str | Path, **common: Any
) -> list[RunConfig]:
    """Validated configs of every point (a bad value fails here, before any training)."""
    checks.nonempty_list("points", points, "parameter dicts")
    overlap = sorted({k for p in points for k in p} & set(common))
    if overlap:
        raise ValueError(f"points and common parameters both set {overlap}; set each once")
    cfgs = [resolve(profile, **common, **p) for p in points]
    names = [run_name(c, p) for c, p in zip(cfgs, points, strict=True)]
    if len(set(names)) != len(names):
        raise ValueError(f"points: must be distinct, got {names}")
    return [replace(c, run_dir=str(Path(root) / n)) for c, n in zip(cfgs, names, strict=True)]


def root_hint(cfg: RunConfig) -> str:
    """What to do when a point's directory under the sweep's root holds another setting's run."""
    root = Path(cfg.run_dir).parent
    return (f"{root} holds runs of another setting: give the sweep another root (a notebook's "
            f"runs_root), or delete {cfg.run_dir} to train it again")


def run_point(cfg: RunConfig, progress: bool = False,
              then: Callable[[RunConfig], Any] | None = None,
              archive: str | Path | None = None,
              adopt_from: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Train and analyse one point (training resumes) unless finished, settle it; its results."""
    done = finished(cfg)
    if done is None:
        with stages.writing(cfg):
            create_run(cfg, hint=root_hint(cfg))
            share_baseline(cfg)
            adopt_coarse(cfg, adopt_from)
        done = stages.run(cfg, progress=progress)
    settle(cfg, then, archive)
    return done


# A finished point's small records, results.json last (it marks the point finished). The
# checkpoints and features stay where the run was made.
ARCHIVED = ("pairs.json", "results.json")
# And its arrays: compact.npz (the float16 train sample and histories that draw its figures
# without features, ~1 MB at w=16) and, where the run kept them (feature_epochs="phase"), its
# test features at the terminal-phase onset and end (float16, ~2.6 MB an epoch at w=16): what (c)
# and the 2-means axis are read from (nbutils.cluster_axis), so that a restored point can still
# be checked.
ARCHIVED_ARRAYS = ("compact.npz", "phase_features.npz")


def _with_run_dir(record: Any, run_dir: str) -> Any:
    """The record with its config's run_dir replaced (an archive holds no machine's paths)."""
    config = record.get("config") if isinstance(record, dict) else None
    return record if not isinstance(config, dict) else {**record,
                                                        "config": {**config, "run_dir": run_dir}}


def _copy_records(src: Path, dest: Path, run_dir: str) -> None:
    """Copy the ARCHIVED_ARRAYS present in `src` to `dest`, then the ARCHIVED records, their
    run_dir set to `run_dir`."""
    for name in ARCHIVED_ARRAYS:
        if (src / name).is_file():
            stages.copy_atomic(src / name, dest / name)
    for name in ARCHIVED:
        if (src / name).is_file():
            save_json(dest / name, _with_run_dir(load_json(src / name), run_dir))


def archive_dir(archive_root: str | Path, root: str | Path) -> Path:
    """Where the sweep under `root` is archived: `<archive_root>/<root's folder name>`."""
    return Path(archive_root) / Path(root).name


def settle(cfg: RunConfig, then: Callable[[RunConfig], Any] | None = None,
           archive: str | Path | None = None) -> None:
    """After a point finished: `then(cfg)` (a per-run analysis), then archive its records."""
    if then is not None:
        then(cfg)
    if archive in (None, ""):
        return
    run = Path(cfg.run_dir)
    _copy_records(run, Path(archive) / run.name, run.name)


def restore(cfg: RunConfig, archive: str | Path) -> bool:
    """Copy an archived point of this configuration into its run directory, if it has no results.

    Whether it did. The run then reads as finished: its results and the archived analyses are
    read back, while anything that needs its features or checkpoints means training it again
    (delete the run directory and the archived copy).
    """
    src = Path(archive) / Path(cfg.run_dir).name
    if finished(cfg) is not None or not (src / "results.json").is_file():
        return False
    stored = load_json(src / "results.json")
    if comparable(stored.get("config", {})) != comparable(cfg.to_dict()):
        return False
    with stages.writing(cfg):
        create_run(cfg, hint=root_hint(cfg))
        _copy_records(src, Path(cfg.run_dir), cfg.run_dir)
    return True


# The 10-label baseline never sees the coarse mapping: model seed, data subset, order and
# augmentation all follow `seed` alone, so runs that differ only in mapping train the same one.
# The log is written last: a baseline counts as trained only once everything else is in place.
BASELINE_FILES = ("train_meta.json", "log.json")


def baseline_twin(cfg: RunConfig) -> Path | None:
    """A sibling run whose finished baseline this run would train identically, if any."""
    keys = [k for k in TRAINING_KEYS if k not in ("mapping", "train_baseline")]
    want = cfg.to_dict()
    for other in sorted(Path(cfg.run_dir).parent.iterdir()):
        path = other / "config.json"
        if other == Path(cfg.run_dir) or not path.is_file():
            continue
        config = load_json(path)["config"]
        twin = replace(cfg, run_dir=str(other))
        if (all(config.get(k) == want[k] for k in keys) and config.get("train_baseline")
                and stages.finished_log(twin, "baseline") is not None
                and (other / "baseline" / "checkpoints").is_dir()):
            return other
    return None


def own_mapping(cfg: RunConfig) -> np.ndarray | None:
    """The run's fine -> super-class table, or None where it needs the train labels (cifar100)."""
    try:
        return coarse_mapping(cfg.mapping, cfg.dataset)
    except DataError:
        return None


def share_baseline(cfg: RunConfig) -> Path | None:
    """Copy a twin's finished baseline (log, checkpoints, features) instead of training it again."""
    if "baseline" not in cfg.models or stages.finished_log(cfg, "baseline") is not None:
        return None
    twin = baseline_twin(cfg)
    if twin is None:
        return None
    dest = model_dir(cfg, "baseline")
    (dest / "checkpoints").mkdir(parents=True, exist_ok=True)
    for epoch in cfg.checkpoint_epochs:
        name = Path("checkpoints") / f"epoch_{epoch:03d}.pt"
        stages.copy_atomic(twin / "baseline" / name, dest / name)
    # Its features too, where the twin extracted them (each file is written whole): the same
    # checkpoints on the same images, so extraction would only repeat them. Only the mapping
    # the file records is this run's own.
    mapping = own_mapping(cfg)
    stored = [] if mapping is None else sorted((twin / "baseline" / "features").glob("*.npz"))
    for src in stored:
        with np.load(src) as twin_arrays:
            arrays = {**twin_arrays, "fine_to_coarse": mapping}
        save_npz(dest / "features" / src.name, **arrays)
    for name in BASELINE_FILES:
        stages.copy_atomic(twin / "baseline" / name, dest / name)
    print(f"{cfg.run_dir}: baseline copied from {twin} (same seed and recipe; the baseline "
          f"does not depend on the mapping)", file=sys.stderr)
    return twin


# The coarse model never sees the 10-label baseline: a run that trained the same coarse model
# beside a baseline (e.g. runs/full/seedN) holds the one this run would train, weight for weight
# on the CPU. Its log is copied last: a model counts as trained only once its log is in place.
COARSE_FILES = ("last.pt", "train_meta.json", "log.json")


def adopt_patterns(adopt_from: Any) -> list[str]:
    """`adopt_from` checked: run directory patterns, each formatted with a point's seed alone."""
    if not isinstance(adopt_from, list | tuple) or not all(isinstance(p, str) for p in adopt_from):
        raise ValueError(f"adopt_from: must be a list of run directory patterns such as "
                         f"'runs/full/seed{{seed}}', got {adopt_from!r}")
    for pattern in adopt_from:
        try:
            pattern.format(seed=0)
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"adopt_from: {pattern!r} must name no field but {{seed}} "
                             f"({type(err).__name__}: {err})") from err
    return list(adopt_from)


def coarse_source(cfg: RunConfig, adopt_from: list[str] | tuple[str, ...]) -> Path | None:
    """The first run of `adopt_from` holding the finished coarse model this run would train."""
    # Unlike the baseline's, the mapping stays: the coarse labels follow it.
    keys = [k for k in TRAINING_KEYS if k != "train_baseline"]
    want = cfg.to_dict()
    for pattern in adopt_from:
        other = resolve_run_dir(pattern.format(seed=cfg.seed))
        path = other / "config.json"
        if other.resolve() == Path(cfg.run_dir).resolve() or not path.is_file():
            continue
        config = load_json(path)["config"]
        source = replace(cfg, run_dir=str(other))
        if (all(config.get(k) == want[k] for k in keys)
                and stages.finished_log(source, "coarse") is not None
                and all(checkpoint_path(source, "coarse", e).is_file()
                        for e in cfg.checkpoint_epochs)):
            return other
    return None


def adopt_coarse(cfg: RunConfig, adopt_from: list[str] | tuple[str, ...]) -> Path | None:
    """Copy a finished coarse model of a run in `adopt_from` instead of training it again."""
    if not adopt_from or stages.finished_log(cfg, "coarse") is not None:
        return None
    other = coarse_source(cfg, adopt_from)
    if other is None:
        return None
    src, dest = model_dir(replace(cfg, run_dir=str(other)), "coarse"), model_dir(cfg, "coarse")
    checkpoints = [checkpoint_path(cfg, "coarse", e).relative_to(dest)
                   for e in cfg.checkpoint_epochs]
    # Its features too, where the source extracted them (each file is written whole): the same
    # checkpoints on the same images, and the same stored labels, since the mapping is a
    # training key of the coarse model.
    stored = [p.relative_to(src) for p in sorted((src / "features").glob("*.npz"))]
    files = [Path(n) for n in COARSE_FILES if (src / n).is_file()]
    # A resume state of an earlier, unfinished training here would sit beside the adopted log.
    (dest / "last.pt").unlink(missing_ok=True)
    for name in (*checkpoints, *stored, *files):
        stages.copy_atomic(src / name, dest / name)
    print(f"{cfg.run_dir}: coarse model copied from {other} ({len(checkpoints)} checkpoints, "
          f"{len(stored)} feature files, {', '.join(map(str, files))}): the same coarse training "
          f"(a baseline trained beside it does not change it)", file=sys.stderr)
    return other


def in_use(cfg: RunConfig) -> str | None:
    """Who holds the run directory's lock when another live process does, else None."""
    try:
        with run_lock(cfg.run_dir):
            return None
    except RunLocked as err:
        return str(err)


def wait_free(cfgs: list[RunConfig]) -> None:
    """Block until no other process holds the lock of any of these runs."""
    busy = [(cfg, in_use(cfg)) for cfg in cfgs]
    for _, holder in busy:
        if holder:
            print(f"waiting: {holder}", file=sys.stderr)
    while any(holder for _, holder in busy):
        time.sleep(WAIT_S)
        busy = [(cfg, in_use(cfg)) for cfg, holder in busy if holder]


def result(cfg: RunConfig) -> dict[str, Any]:
    """The point's results.json; RuntimeError when it has none made with this configuration."""
    done = finished(cfg)
    if done is None:
        raise RuntimeError(f"{cfg.run_dir}: no results.json made with this configuration after "
                           "its job ended; another process may have rewritten the run")
    return done


def run_sweep(
    points: list[dict[str, Any]], profile: str = "exp", root: str | Path | None = None,
    progress: bool = True, launcher: str = "local", jobs: int = 1,
    slurm: dict[str, Any] | str | None = None, then: Callable[[RunConfig], Any] | None = None,
    archive: str | Path | None = None, adopt_from: list[str] | tuple[str, ...] = (),
    **common: Any,
) -> list[dict[str, Any]]:
    """results.json of every point, running the stages of those not yet finished.

    Each unfinished point is a job of `launcher` (launch.LAUNCHERS): `local` (the default)
    runs up to `jobs` points at once, each in its own process, so a crash or a kill of one
    training leaves the notebook's kernel and the other points alone, the kernel does not
    keep every run's data and model in memory, and a sweep runs exactly as it would on a
    cluster; `slurm` submits them as one array job with the `slurm` parameters
    (launch.SLURM_KEYS); `inline` runs them one by one in this process, for a debugger or a
    quick test. A finished point is read back, not run; a point whose run directory another
    live process holds (a job of an earlier call) is not submitted again but waited for.

    Once a point is finished, its job calls `then(cfg)` (a module-level function, e.g.
    `pairs.of_point`), and copies its ARCHIVED records to `<archive>/<run name>/` when
    `archive` is set; a point archived there with the same configuration is restored from it
    instead of trained (`restore`).

    `adopt_from` lists run directories, patterns formatted with a point's seed (e.g.
    `runs/full/seed{seed}`): a point whose coarse model one of them has finished with the same
    training keys (its baseline aside) copies it instead of training it (`adopt_coarse`).
    """
    launch.check(launcher, jobs, slurm)
    adopt_from = adopt_patterns(adopt_from)
    if then is not None and not callable(then):
        raise ValueError(f"then: must be a function of a RunConfig or None, got {then!r}")
    root = Path(root) if root not in (None, "") else Path("runs") / "experiments" / profile
    cfgs = sweep_configs(points, profile, root, **common)
    if archive not in (None, ""):
        for cfg in cfgs:
            restore(cfg, archive)
    # Points finished before this call (by an earlier version, or without an archive).
    for cfg in cfgs:
        if finished(cfg) is not None and not in_use(cfg):
            settle(cfg, then, archive)
    todo = [cfg for cfg in cfgs if finished(cfg) is None]
    job = partial(run_point, then=then, archive=archive, adopt_from=adopt_from)
    while todo:
        busy = [cfg for cfg in todo if in_use(cfg)]
        launch.run_jobs(job, [cfg for cfg in todo if cfg not in busy], root, launcher,
                        jobs, slurm, progress, desc=f"sweep {root.name}")
        wait_free(busy)
        # A holder that stopped before finishing leaves its point to the next round.
        todo = [cfg for cfg in busy if finished(cfg) is None]
    return [result(cfg) for cfg in cfgs]


def grid_points(
    lrs: list[float], weight_decays: list[float], seeds: list[int]
) -> list[dict[str, Any]]:
    """The learning-rate x weight-decay grid, one point per seed, seed by seed.

    Every cell's first seed comes before any cell's second, so that a sweep cut short (hours
    per point on a CPU) has already seen the whole grid once.
    """
    for name, values in (("lrs", lrs), ("weight_decays", weight_decays), ("seeds", seeds)):
        checks.nonempty_list(name, values)
    return [{"lr": lr, "weight_decay": wd, "seed": s}
            for s in seeds for lr in lrs for wd in weight_decays]


def mapping_points(mappings: dict[str, list[int]]) -> list[dict[str, Any]]:
    """One point per (mapping, seed), seed by seed: `mappings` maps a mapping name to its seeds.

    Every mapping's first seed comes before any mapping's second, as in `grid_points`: a sweep
    cut short has seen every mapping, and a session that lost its run directories trains again
    the 10-label baseline of the seed it works on, not one per seed (a baseline is shared only
    between run directories on one machine, `share_baseline`).
    """
    if not isinstance(mappings, dict) or not mappings:
        raise ValueError(f"mappings: must be a non-empty dict name -> seeds, got {mappings!r}")
    for name, seeds in mappings.items():
        checks.nonempty_list(f"mappings[{name!r}]", seeds, "seeds")
    rounds = max(len(seeds) for seeds in mappings.values())
    return [{"mapping": m, "seed": seeds[i]} for i in range(rounds)
            for m, seeds in mappings.items() if i < len(seeds)]
