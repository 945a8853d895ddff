"""The `paper` profile's standing order on a GPU held for a fixed time, carried across sessions.

The order (docs/gpu.md): 1. the coarse model, seed 0, 200 epochs, compiled; 2. its 10-label
baseline; 3. seeds 1 and 2 of both. Each (seed, model) is a unit trained in its own run
directory (`<runs>/paper-s0-coarse`, ...; one writer per directory). From measured
throughput (probe files of `benchmarks/train_throughput.py --json [--concurrent N]`, and the
epoch times of earlier sessions in the state file) the plan picks how many of the next units
train at once and how many of their epochs fit; the trainings stop at an epoch boundary before
the deadline (NBUTILS_DEADLINE). A unit cut off is packed (`nbutils.carry`: last.pt, config,
logs in checksummed parts under 16 MiB) and continues in the next session from the parts and
`state.json` that come back. A seed's finished models are analysed where they finished.

    python scripts/paper_on_gpu.py --data-root ~/cifar10 --out $OUT --budget 540 \\
        --probe probe_c1.json probe_c2.json probe_c4.json [--state carry/state.json \\
        --carry-in carry/]

Everything that comes back is in `--out`: state.json, runs.tar (JSON logs, results, compact.npz
of every unit) and the first carry parts; the rest wait in `--stage`, and the last lines printed
are the commands that bring them back, 8 files and 64 MiB per call.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nbutils import carry  # noqa: E402
from nbutils.__main__ import parse_set  # noqa: E402
from nbutils.config import resolve  # noqa: E402
from nbutils.runs import atomic_write, create_run, load_json, save_json  # noqa: E402
from nbutils.train import DEADLINE_ENV  # noqa: E402

TRAIN_SIZE = 50_000
# Calibration (docs/gpu.md): the committed run planned 50,000 / 11,633 img/s (probe, two
# trainings at once) + a 1.5 s allowance = 5.8 s per epoch; its epochs took 4.0 s (log) and
# 4.32 s of wall time. The probe's rate already pays for evaluation, so the allowance is only
# what measured epochs show beyond it (`calibrated_overhead`), 0 until one does.
# Wall time per epoch beyond the logged seconds (last.pt and checkpoint writes): the committed
# run's 66 epochs took 285 s after start-up against 261-265 s in their logs.
CHECKPOINT_WRITE_S = 0.3
# From the start of `python -m nbutils train` to its first step (data, model); the committed
# run's first epoch ended 20 s after start and took 5 s.
STARTUP_S = 15.0
# The first compiled epoch's extra time (reduce-overhead, w=64: 44 s against 0.4 s, H200).
COMPILE_S = 45.0
PACK_RESERVE_S = 20.0
# Device seconds a unit cut off costs beyond its epochs: its ~90 MB of parts (w=64) come back in
# one more call and go up in two more next time (an estimate; each warm call takes seconds).
CARRY_S = 30.0
# What one call of the device tool brings back from $OUT.
OUT_FILES, OUT_BYTES = 8, 64 * carry.MIB
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune-no-cudagraphs")
SMALL_ARTIFACTS = ("*/*.json", "*/*.md", "*/compact.npz", "*/*/log.json", "*/*/train_meta.json",
                   "*/*/collapse.json", "*/*/recovery.json")


@dataclass(frozen=True)
class Unit:
    """One training of the standing order: a seed's coarse model or its 10-label baseline."""

    seed: int
    model: str
    step: int

    @property
    def key(self) -> str:
        """Its name in the state file, its run directory and its carry pack."""
        return f"s{self.seed}-{self.model}"


ORDER = (Unit(0, "coarse", 1), Unit(0, "baseline", 2), Unit(1, "coarse", 3),
         Unit(1, "baseline", 3), Unit(2, "coarse", 3), Unit(2, "baseline", 3))


@dataclass
class Plan:
    """Which units train at once this session, and how far each gets."""

    units: list[Unit]
    concurrent: int
    epoch_s: float
    start: dict[str, int]
    end: dict[str, int]
    why: str = ""
    finishes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- pure planning


def probe_rate(record: dict[str, Any]) -> tuple[int, float]:
    """(trainings at once, their img/s together) of one train_throughput.py --json file."""
    n = int(record.get("concurrent", 1))
    if "aggregate_img_per_s" in record:
        return n, float(record["aggregate_img_per_s"])
    return n, float(record["img_per_s"]["ours"]) * n


def read_probes(records: list[dict[str, Any]]) -> dict[int, float]:
    """Aggregate img/s by number of concurrent trainings; the slowest record of each count."""
    rates: dict[int, float] = {}
    for record in records:
        n, rate = probe_rate(record)
        rates[n] = min(rate, rates.get(n, math.inf))
    return rates


def planned_epoch_s(img_per_s: float, overhead: float) -> float:
    """Wall seconds of one epoch of 50,000 images at one training's `img_per_s`."""
    return TRAIN_SIZE / img_per_s + overhead


def calibrated_overhead(logged_epoch_s: float, img_per_s: float) -> float:
    """Seconds per epoch that a measured run spent beyond the probe's rate (never below 0).

    `logged_epoch_s` is an epoch's time in log.json (steps and test evaluation); the checkpoint
    writes come on top. The committed run: 4.0 s logged at 11,633 img/s -> 0.0 s, not 1.5 s.
    """
    return max(0.0, logged_epoch_s + CHECKPOINT_WRITE_S - TRAIN_SIZE / img_per_s)


def epoch_costs(probes: dict[int, float], measured: list[dict[str, Any]], compile_mode: str,
                max_concurrent: int) -> dict[int, float]:
    """Wall seconds per epoch of each training when n train at once, for each n we can cost.

    An n measured in an earlier session with this compile mode counts as measured (median of
    its epochs); otherwise the probe's rate plus the allowance that measured runs show.
    """
    same = [m for m in measured if m["compile"] == compile_mode]
    overheads = [calibrated_overhead(m["epoch_s"], probes[m["concurrent"]] / m["concurrent"])
                 for m in same if m["concurrent"] in probes]
    overhead = max(overheads, default=0.0)
    costs = {n: planned_epoch_s(rate / n, overhead) for n, rate in probes.items()}
    for n in {m["concurrent"] for m in same}:
        costs[n] = statistics.median(m["epoch_s"] for m in same if m["concurrent"] == n)
        costs[n] += CHECKPOINT_WRITE_S
    return {n: s for n, s in sorted(costs.items()) if 1 <= n <= max_concurrent}


def pending(state: dict[str, Any]) -> list[tuple[Unit, int]]:
    """The units not yet finished, in the standing order, with the epochs each has done."""
    units = state.get("units", {})
    return [(u, units.get(u.key, {}).get("epochs_done", 0)) for u in ORDER
            if not units.get(u.key, {}).get("finished", False)]


def choose(todo: list[tuple[Unit, int]], epochs: int, seconds: float, costs: dict[int, float],
           startup_s: float) -> Plan | None:
    """How many of the next units to train at once: the count that finishes the first of them
    in this session if any does, then the most epochs in all (a unit cut off counting CARRY_S
    less), then the fewest processes. None when not one epoch fits (or nothing is left).
    """
    best, best_key = None, None
    for n, epoch_s in costs.items():
        if n > len(todo):
            continue
        fit = math.floor((seconds - startup_s) / epoch_s)
        if fit < 1:
            continue
        chosen = todo[:n]
        end = {u.key: min(epochs, done + fit) for u, done in chosen}
        total = sum(end[u.key] - done for u, done in chosen)
        cut = sum(end[u.key] < epochs for u, _ in chosen)
        first_done = end[chosen[0][0].key] == epochs
        key = (first_done, total - cut * CARRY_S / epoch_s, -n)
        if best_key is None or key > best_key:
            best_key = key
            best = Plan(units=[u for u, _ in chosen], concurrent=n, epoch_s=epoch_s,
                        start={u.key: done for u, done in chosen}, end=end,
                        finishes=[u.key for u, _ in chosen if end[u.key] == epochs])
    if best is not None:
        best.why = (f"{seconds:.0f} s for training, {startup_s:.0f} s start-up, "
                    f"{best.epoch_s:.2f} s per epoch with {best.concurrent} at once; costs per "
                    "epoch by trainings at once: "
                    + ", ".join(f"{n}: {s:.2f} s" for n, s in costs.items()))
    return best


def return_batches(files: list[tuple[str, int]], first_files: int, first_bytes: int,
                   max_files: int = OUT_FILES, max_bytes: int = OUT_BYTES) -> list[list[str]]:
    """Files split into the calls that bring them back; the first call already holds
    `first_files` files of `first_bytes` (the log, state, runs.tar)."""
    batches: list[list[str]] = [[]]
    n, size = first_files, first_bytes
    for name, nbytes in files:
        if nbytes > max_bytes:
            raise ValueError(f"{name}: {nbytes} bytes cannot come back in one call "
                             f"(at most {max_bytes})")
        if n + 1 > max_files or size + nbytes > max_bytes:
            batches.append([])
            n, size = 0, 0
        batches[-1].append(name)
        n, size = n + 1, size + nbytes
    return batches


def record(state: dict[str, Any], unit: Unit, log: list[dict], epochs: int, start: int,
           concurrent: int, compile_mode: str, analysed: bool) -> dict[str, Any]:
    """The state after a session trained `unit` from epoch `start` to where `log` ends."""
    done = log[-1]["epoch"] if log else 0
    new = json.loads(json.dumps(state))
    new.setdefault("units", {})[unit.key] = {
        "seed": unit.seed, "model": unit.model, "step": unit.step, "epochs_done": done,
        "finished": done == epochs, "analysed": analysed}
    # The first epoch of a session holds compilation and warm-up: the rest measure the cost.
    seconds = [row["seconds"] for row in log if row["epoch"] > start + 1]
    if seconds:
        new.setdefault("measured", []).append({
            "unit": unit.key, "concurrent": concurrent, "compile": compile_mode,
            "epochs": [start + 1, done], "epoch_s": statistics.median(seconds)})
    return new


def check_state(state: dict[str, Any], epochs: int) -> None:
    """Refuse a state file of another epoch count (its units' schedules would not match)."""
    if state and state.get("epochs") != epochs:
        raise ValueError(f"--epochs: the state file's runs train for {state.get('epochs')} "
                         f"epochs, got --epochs {epochs}")


def checkpoints(epochs: int) -> list[int]:
    """Seven checkpoints: init, epochs 1 and 5, then quarters (features cost device time)."""
    return sorted({0, 1, min(5, epochs)} | {round(epochs * f) for f in (0.25, 0.5, 0.75, 1.0)})


# --------------------------------------------------------------------------- the session


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags, checked before any work."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True, help="what comes back (state, logs, first parts)")
    p.add_argument("--stage", default=str(Path.home() / "stage"),
                   help="carry parts that wait for a later call")
    p.add_argument("--runs", default=str(Path.home() / "runs"), help="run directories' parent")
    p.add_argument("--profile", default="paper")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--budget", type=float, required=True,
                   help="seconds this script may take in all, from its start")
    p.add_argument("--analysis-reserve", type=float, default=90.0,
                   help="seconds kept for the analysis of models that finish")
    p.add_argument("--probe", nargs="*", default=[],
                   help="JSON files of train_throughput.py --json [--concurrent N]")
    p.add_argument("--default-img-per-s", type=float, default=8000.0,
                   help="one training's img/s when no probe file is given")
    p.add_argument("--max-concurrent", type=int, default=4)
    p.add_argument("--compile-mode", default="reduce-overhead", choices=COMPILE_MODES,
                   help="torch.compile mode of the trainings ('off': eager)")
    p.add_argument("--state", help="state.json of the previous session")
    p.add_argument("--carry-in", help="folder with the previous session's carry parts")
    p.add_argument("--carry-checkpoints", action="store_true",
                   help="carry a cut unit's checkpoints too (45 MB each at w=64), so that the "
                        "session that finishes it can analyse it")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="passed on to python -m nbutils train")
    args = p.parse_args(argv)
    for name in ("epochs", "max_concurrent"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be a positive integer")
    for name in ("budget", "default_img_per_s"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')}: must be positive")
    return args


def unit_dir(args: argparse.Namespace, unit: Unit) -> Path:
    """The run directory a unit trains in."""
    return Path(args.runs) / f"paper-{unit.key}"


def run_config(args: argparse.Namespace, seed: int, run_dir: Path):
    """The training configuration of one seed (the same for its two units)."""
    extra = parse_set(args.set)
    if args.compile_mode != "off":
        extra.update(compile=True, compile_mode=args.compile_mode)
    return resolve(args.profile, run_dir=str(run_dir), data_root=args.data_root, seed=seed,
                   epochs=args.epochs, train_baseline=True,
                   checkpoint_epochs=checkpoints(args.epochs), **extra)


def train_command(args: argparse.Namespace, unit: Unit) -> list[str]:
    """`python -m nbutils train` for one unit."""
    cmd = [sys.executable, "-m", "nbutils", "train", "--profile", args.profile, "--run-dir",
           str(unit_dir(args, unit)), "--data-root", args.data_root, "--seed", str(unit.seed),
           "--epochs", str(args.epochs), "--models", unit.model, "--no-progress",
           "--set", "train_baseline=true",
           "--set", f"checkpoint_epochs={json.dumps(checkpoints(args.epochs))}"]
    if args.compile_mode != "off":
        cmd += ["--set", "compile=true", "--set", f"compile_mode={args.compile_mode}"]
    for item in args.set:
        cmd += ["--set", item]
    return cmd


def prepare(args: argparse.Namespace, plan: Plan) -> None:
    """Unpack each carried unit (every part checked first) and record every unit's config."""
    for unit in plan.units:
        target = unit_dir(args, unit)
        if plan.start[unit.key]:
            if not args.carry_in:
                raise ValueError(f"--carry-in: {unit.key} is at epoch {plan.start[unit.key]}; "
                                 "give the folder with its carry parts")
            manifest = carry.unpack(Path(args.carry_in), target, unit.key)
            if manifest["epochs_done"].get(unit.model) != plan.start[unit.key]:
                raise ValueError(f"--carry-in: the pack of {unit.key} is at epoch "
                                 f"{manifest['epochs_done']}, the state at "
                                 f"{plan.start[unit.key]}")
        create_run(run_config(args, unit.seed, target))


def report(args: argparse.Namespace, units: list[Unit]) -> str:
    """One line with each unit's last logged epoch."""
    parts = []
    for unit in units:
        try:
            last = json.loads((unit_dir(args, unit) / unit.model / "log.json").read_text())[-1]
            parts.append(f"{unit.key}: epoch {last['epoch']} ({last['seconds']:.1f} s)")
        except (OSError, ValueError, IndexError):
            parts.append(f"{unit.key}: starting")
    return " | ".join(parts)


def train(args: argparse.Namespace, plan: Plan, deadline: float) -> dict[str, list[dict]]:
    """The plan's units as concurrent processes stopping before `deadline`; their logs."""
    env = {**os.environ, DEADLINE_ENV: f"{deadline:.3f}", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(train_command(args, u), env=env) for u in plan.units]
    t0 = time.time()
    while any(p.poll() is None for p in procs):
        time.sleep(1 if args.epochs < 10 else 20)
        print(f"[{time.time() - t0:6.0f} s] {report(args, plan.units)}", flush=True)
    failed = [u.key for u, p in zip(plan.units, procs, strict=True) if p.returncode]
    if failed:
        raise SystemExit(f"training failed: {', '.join(failed)}")
    logs = {}
    for unit in plan.units:
        path = unit_dir(args, unit) / unit.model / "log.json"
        logs[unit.key] = load_json(path) if path.is_file() else []
    return logs


def analysis_dir(args: argparse.Namespace, seed: int, finished: list[Unit]) -> Path | None:
    """A run directory joining a seed's models that finished here (None if its coarse did not).

    Both models: the seed's full run. The coarse model alone: a run of it alone
    (train_baseline false), enough for the recovery (b), which needs only the coarse model.
    """
    models = {u.model for u in finished if u.seed == seed}
    if "coarse" not in models:
        return None
    both = models == {"coarse", "baseline"}
    root = Path(args.runs) / (f"paper-s{seed}" if both else f"paper-s{seed}-coarse-only")
    cfg = run_config(args, seed, root)
    create_run(cfg if both else dataclasses.replace(cfg, train_baseline=False))
    for model in sorted(models):
        link = root / model
        if not link.exists():
            # Features are written through the link into the unit's own model directory.
            link.symlink_to(unit_dir(args, Unit(seed, model, 0)) / model,
                            target_is_directory=True)
    return root


def missing_checkpoints(args: argparse.Namespace, unit: Unit) -> list[int]:
    """Checkpoint epochs of a unit that are not on this machine (left where it was cut off)."""
    folder = unit_dir(args, unit) / unit.model / "checkpoints"
    return [e for e in checkpoints(args.epochs) if not (folder / f"epoch_{e:03d}.pt").is_file()]


def analyze(args: argparse.Namespace, finished: list[Unit], deadline: float) -> list[str]:
    """`python -m nbutils analyze` for each seed with models finished here, while time lasts."""
    done = []
    complete = []
    for unit in finished:
        missing = missing_checkpoints(args, unit)
        if missing:
            print(f"{unit.key} is not analysed: its checkpoints of epochs {missing} stayed on "
                  "an earlier machine (--carry-checkpoints carries them)", flush=True)
        else:
            complete.append(unit)
    for seed in sorted({u.seed for u in complete}):
        root = analysis_dir(args, seed, complete)
        if root is None:
            continue
        if time.time() > deadline:
            print(f"no time left to analyse {root.name}", flush=True)
            break
        cmd = [sys.executable, "-m", "nbutils", "analyze", "--profile", args.profile,
               "--run-dir", str(root), "--data-root", args.data_root, "--no-progress"]
        if subprocess.run(cmd, timeout=max(1.0, deadline - time.time())).returncode == 0:
            done += [u.key for u in complete if u.seed == seed]
    return done


def pack_runs(runs: Path, target: Path) -> Path:
    """Every run's small artifacts (JSON logs, results, compact.npz) as one tar file."""
    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w") as tar:
            for pattern in SMALL_ARTIFACTS:
                for path in sorted(runs.glob(pattern)):
                    tar.add(path, arcname=str(path.relative_to(runs)))

    return atomic_write(target, write)


def copy_into(src: Path, names: list[str], dst: Path) -> None:
    """Copy files from `src` to `dst` (atomically: $OUT may be read at any time)."""
    for name in names:
        atomic_write(dst / name, lambda tmp, n=name: shutil.copyfile(src / n, tmp))


def send_back(args: argparse.Namespace, state: dict[str, Any], cut: list[Unit]) -> None:
    """State, small artifacts and as many carry parts as fit into --out; the rest wait."""
    out, stage = Path(args.out), Path(args.stage)
    save_json(out / "state.json", state)
    pack_runs(Path(args.runs), out / "runs.tar")
    files: list[tuple[str, int]] = []
    for unit in cut:
        manifest = carry.pack(unit_dir(args, unit), stage, unit.key, models=(unit.model,),
                              checkpoints=args.carry_checkpoints)
        print(carry.describe(manifest), flush=True)
        files.append((carry.manifest_path(stage, unit.key).name,
                      carry.manifest_path(stage, unit.key).stat().st_size))
        files += [(p["file"], p["bytes"]) for p in manifest["parts"]]
    present = [p for p in out.iterdir() if p.is_file()]
    # The command's own log (tee) is one more file there.
    batches = return_batches(files, len(present) + 1,
                             sum(p.stat().st_size for p in present) + carry.MIB)
    copy_into(stage, batches[0], out)
    save_json(stage / "state.json", state)
    for i, batch in enumerate(batches[1:], 2):
        print(f"call {i}: cp {' '.join(str(stage / n) for n in batch)} $OUT/", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Plan, train until the deadline, analyse what finished, pack what did not."""
    args = parse_args(argv)
    start = time.time()
    state = load_json(Path(args.state)) if args.state else {}
    check_state(state, args.epochs)
    probes = read_probes([load_json(Path(p)) for p in args.probe])
    if not probes:
        probes = {1: args.default_img_per_s}
    startup = STARTUP_S + (COMPILE_S if args.compile_mode != "off" else 0.0)
    costs = epoch_costs(probes, state.get("measured", []), args.compile_mode,
                        args.max_concurrent)
    seconds = args.budget - args.analysis_reserve - PACK_RESERVE_S
    plan = choose(pending(state), args.epochs, seconds, costs, startup)
    if plan is None:
        print(f"nothing to train: {len(pending(state))} unit(s) left; costs {costs}", flush=True)
        return
    print(f"plan: {', '.join(f'{k} {plan.start[k]}->{plan.end[k]}' for k in plan.end)} "
          f"(steps {sorted({u.step for u in plan.units})}; {plan.why})", flush=True)
    if args.dry_run:
        return
    prepare(args, plan)
    logs = train(args, plan, start + seconds)
    state = {**state, "epochs": args.epochs}
    finished = [u for u in plan.units if logs[u.key] and logs[u.key][-1]["epoch"] == args.epochs]
    analysed = analyze(args, finished, start + args.budget - PACK_RESERVE_S)
    for unit in plan.units:
        state = record(state, unit, logs[unit.key], args.epochs, plan.start[unit.key],
                       plan.concurrent, args.compile_mode, unit.key in analysed)
    cut = [u for u in plan.units if u not in finished and logs[u.key]]
    send_back(args, state, cut)
    print(f"done in {time.time() - start:.0f} s: finished {[u.key for u in finished]}, "
          f"analysed {analysed}, carried {[u.key for u in cut]}", flush=True)


if __name__ == "__main__":
    main()
