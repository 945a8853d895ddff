"""The `paper` profile on one lent GPU within a fixed time budget, without Jupyter.

Picks the number of epochs that fits `--budget` seconds from measured throughput
(`benchmarks/train_throughput.py --json`, one process and two concurrent ones), trains the
coarse model and the 10-label baseline at the same time on the one GPU (at batch 128 one
training leaves the GPU partly idle), runs `python -m nbutils analyze`, and packs the run's
small artifacts (JSON logs, results, compact.npz) into `--out` for `python -m nbutils render`.

    python scripts/paper_on_gpu.py --data-root ~/cifar10 --out $OUT --budget 520 \\
        --probe ~/probe_single.json --probe-pair ~/probe_pair0.json ~/probe_pair1.json

At least `--min-epochs` (100) are trained: when the pair does not fit, the coarse model is
trained alone (no baseline); the budget then only bounds the epochs from above.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nbutils.__main__ import parse_set  # noqa: E402
from nbutils.config import resolve  # noqa: E402
from nbutils.runs import create_run  # noqa: E402

TRAIN_SIZE = 50_000
# Per-epoch cost besides the training steps: test-set evaluation and last.pt (model and
# optimizer state, about 90 MB at w=64) written and fsync'd.
EPOCH_OVERHEAD_S = 1.5
SMALL_ARTIFACTS = ("*.json", "*.md", "compact.npz", "coarse/*.json", "baseline/*.json")


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True, help="directory for the packed results")
    p.add_argument("--run-dir", default=str(Path.home() / "runs" / "paper"))
    p.add_argument("--profile", default="paper")
    p.add_argument("--budget", type=float, required=True,
                   help="seconds this script may take in all, from its start")
    p.add_argument("--analysis-reserve", type=float, default=150.0,
                   help="seconds kept for features, NC metrics, recovery and packing")
    p.add_argument("--min-epochs", type=int, default=100)
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--probe", help="JSON of train_throughput.py --loops ours (one process)")
    p.add_argument("--probe-pair", nargs="*", default=[],
                   help="JSON files of two concurrent train_throughput.py --loops ours runs")
    p.add_argument("--default-img-per-s", type=float, default=8000.0,
                   help="one training's img/s when no probe file is there")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="passed on to python -m nbutils train")
    return p.parse_args()


def read_rate(paths: list[str]) -> float | None:
    """The slowest 'ours' img/s among the probe files that exist, or None."""
    rates = [json.loads(Path(p).read_text())["img_per_s"]["ours"]
             for p in paths if p and Path(p).is_file()]
    return min(rates) if rates else None


def epochs_within(seconds: float, img_per_s: float, max_epochs: int) -> int:
    """Whole epochs of the train set that fit in `seconds` at `img_per_s`, at most max_epochs."""
    per_epoch = TRAIN_SIZE / img_per_s + EPOCH_OVERHEAD_S
    return max(0, min(max_epochs, math.floor(seconds / per_epoch)))


def plan(args: argparse.Namespace, seconds: float) -> tuple[int, bool, str]:
    """(epochs, train the baseline beside the coarse model?, why) for `seconds` of training."""
    single = read_rate([args.probe]) or args.default_img_per_s
    pair = read_rate(args.probe_pair) or single / 2
    both = epochs_within(seconds, pair, args.max_epochs)
    alone = epochs_within(seconds, single, args.max_epochs)
    why = (f"{seconds:.0f} s for training; measured img/s per training: {single:.0f} alone, "
           f"{pair:.0f} with two at once -> {alone} epochs alone, {both} as a pair")
    if both >= args.min_epochs:
        return both, True, why + "; training both"
    if alone >= args.min_epochs:
        return alone, False, why + "; coarse model alone (the pair would not reach min epochs)"
    return max(alone, args.min_epochs), False, why + "; coarse alone at the minimum epochs"


def checkpoints(epochs: int) -> list[int]:
    """Seven checkpoints: init, epochs 1 and 5, then quarters (features cost device time)."""
    return sorted({0, 1, min(5, epochs)} | {round(epochs * f) for f in (0.25, 0.5, 0.75, 1.0)})


def nbutils(*argv: str) -> list[str]:
    """The command line of `python -m nbutils` with this interpreter."""
    return [sys.executable, "-m", "nbutils", *argv]


def report_progress(run_dir: Path, models: list[str]) -> str:
    """One line with each model's last logged epoch."""
    parts = []
    for m in models:
        path = run_dir / m / "log.json"
        try:
            last = json.loads(path.read_text())[-1]
        except (OSError, ValueError, IndexError):
            parts.append(f"{m}: starting")
            continue
        parts.append(f"{m}: epoch {last['epoch']} train {last['train_acc']:.4f} "
                     f"test {last['test_acc']:.4f} ({last['seconds']:.1f} s)")
    return " | ".join(parts)


def train(args: argparse.Namespace, epochs: int, with_baseline: bool) -> float:
    """Train the models as concurrent processes, printing progress; returns seconds."""
    t0 = time.perf_counter()
    common = ["--profile", args.profile, "--run-dir", args.run_dir, "--data-root",
              args.data_root, "--epochs", str(epochs), "--no-progress",
              "--set", f"train_baseline={json.dumps(with_baseline)}",
              "--set", f"checkpoint_epochs={json.dumps(checkpoints(epochs))}"]
    for item in args.set:
        common += ["--set", item]
    models = ["coarse", "baseline"] if with_baseline else ["coarse"]
    # config.json is written once here, so the concurrent trainings find it and agree.
    cfg = resolve(args.profile, run_dir=args.run_dir, data_root=args.data_root, epochs=epochs,
                  train_baseline=with_baseline, checkpoint_epochs=checkpoints(epochs),
                  **parse_set(args.set))
    create_run(cfg)
    procs = [subprocess.Popen(nbutils("train", *common, "--models", m)) for m in models]
    while any(p.poll() is None for p in procs):
        time.sleep(20)
        print(f"[{time.perf_counter() - t0:6.0f} s] {report_progress(Path(args.run_dir), models)}",
              flush=True)
    failed = [m for m, p in zip(models, procs, strict=True) if p.returncode]
    if failed:
        raise SystemExit(f"training failed: {', '.join(failed)}")
    return time.perf_counter() - t0


def pack(run_dir: Path, out: Path) -> Path:
    """The run's small artifacts (no checkpoints, no features) as one tar file in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / "paper_run.tar"
    with tarfile.open(target, "w") as tar:
        for pattern in SMALL_ARTIFACTS:
            for path in sorted(run_dir.glob(pattern)):
                tar.add(path, arcname=str(path.relative_to(run_dir)))
    return target


def export_checkpoints(run_dir: Path, epochs: int, out: Path, part_mib: int = 15) -> list[Path]:
    """Final weights of each model, large tensors in float16, cut into parts under part_mib.

    A fallback: with them the features can be computed elsewhere if the analysis is cut off.
    """
    import io

    import torch

    buffer = io.BytesIO()
    state = {}
    for model_path in sorted(run_dir.glob(f"*/checkpoints/epoch_{epochs:03d}.pt")):
        weights = torch.load(model_path, map_location="cpu")["model"]
        state[model_path.parts[-3]] = {
            k: v.half() if v.is_floating_point() and v.numel() > 4096 else v
            for k, v in weights.items()}
    torch.save(state, buffer)
    data, size = buffer.getvalue(), part_mib * 2**20
    parts = []
    for i in range(0, len(data), size):
        parts.append(out / f"final_weights.part{i // size}")
        parts[-1].write_bytes(data[i:i + size])
    return parts


def main() -> None:
    """Plan, train, analyse and pack within the budget."""
    args = parse_args()
    start = time.perf_counter()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    seconds = args.budget - args.analysis_reserve - 30
    epochs, with_baseline, why = plan(args, seconds)
    print(f"plan: {epochs} epochs, baseline {'yes' if with_baseline else 'no'} ({why})",
          flush=True)
    train_s = train(args, epochs, with_baseline)
    print(f"training done in {train_s:.0f} s", flush=True)
    out = Path(args.out)
    pack(Path(args.run_dir), out)
    export_checkpoints(Path(args.run_dir), epochs, out)
    t0 = time.perf_counter()
    subprocess.run(nbutils("analyze", "--profile", args.profile, "--run-dir", args.run_dir,
                           "--data-root", args.data_root, "--no-progress"), check=True)
    print(f"analysis done in {time.perf_counter() - t0:.0f} s", flush=True)
    packed = pack(Path(args.run_dir), out)
    for name in ("results.json", "results.md"):
        (out / name).write_bytes((Path(args.run_dir) / name).read_bytes())
    print(f"packed {packed} ({packed.stat().st_size / 1e6:.1f} MB); "
          f"{time.perf_counter() - start:.0f} s in all", flush=True)


if __name__ == "__main__":
    main()
