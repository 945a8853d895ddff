"""Training throughput: our device-resident loop against the standard DataLoader recipe.

All three loops train the same seeded ResNet-18 (channels_last, same SGD, batch and autocast)
on the same real CIFAR-10 images with coarse (mod5) labels, in this one process:

- bare step: forward + backward + step on one fixed, pre-normalised batch (the ceiling);
- standard: torchvision-style Dataset of PIL images with RandomCrop(32, padding=4),
  RandomHorizontalFlip, ToTensor, Normalize, through a DataLoader with worker processes;
- ours: nbutils.train.train_epoch on uint8 images held on the device, batched augmentation.

Each loop runs `--warmup` untimed steps, then `--steps` timed ones; every round measures the
loops in turn and the best round of each counts (the machine may be busy with other work).
`--synthetic N` trains on N seeded random images instead (for a machine without the data:
the step's cost does not depend on the pixels). `--compile` wraps the bare and our models in
`torch.compile` (the standard recipe stays eager, as it is usually run). The last line is
`ratio <ours / standard>` (`ratio <ours / bare>` when the standard loop is not run).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import load, run
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from nbutils.config import resolve
from nbutils.data import (
    Split,
    channel_stats,
    coarse_mapping,
    load_cifar,
    normalize,
    stats_tensors,
    to_tensor,
)
from nbutils.device import amp_dtype, autocast, select_device
from nbutils.distributed import Dist
from nbutils.train import build_model, make_optimizer, train_epoch

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


class PILImages(Dataset):
    """uint8 HWC images served one PIL image at a time through `transform`, as torchvision's."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """The transformed image i and its label."""
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=16, help="ResNet-18 width (cpu profile: 16)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=60, help="timed steps per loop")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before timing")
    p.add_argument("--rounds", type=int, default=2, help="rounds; the best of each loop counts")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (standard recipe)")
    p.add_argument("--threads", type=int,
                   help="cap on torch and BLAS/OpenMP threads (default: every core)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"))
    p.add_argument("--data-root", default=str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else None)
    p.add_argument("--synthetic", type=int, metavar="N",
                   help="train on N seeded random images instead of CIFAR-10")
    p.add_argument("--loops", default="bare,standard,ours",
                   help="comma-separated subset of bare, standard, ours")
    p.add_argument("--compile", action="store_true", help="torch.compile the bare and our models")
    p.add_argument("--compile-mode", default="default",
                   choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
                   help="torch.compile mode (reduce-overhead: CUDA graphs)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="let cuDNN time its algorithms for each shape (GPU)")
    p.add_argument("--json", help="also write the measured img/s to this JSON file")
    args = p.parse_args()
    loops = args.loops.split(",")
    if not loops or set(loops) - set(LOOPS):
        p.error(f"--loops: got {args.loops!r}; allowed: a comma-separated subset of "
                f"{', '.join(LOOPS)}")
    return args


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sgd_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor, dtype: torch.dtype | None) -> None:
    """One forward + backward + SGD step, as train_epoch does it."""
    with autocast(x.device, dtype):
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bare_step(ctx: dict) -> float:
    """Images/s of the step alone, on one fixed pre-normalised batch."""
    model, opt = ctx["new_model"](ctx["compile"])
    n = ctx["batch"]
    x = normalize(ctx["x"][:n], *ctx["stats"]).contiguous(memory_format=torch.channels_last)
    y = ctx["y"][:n]
    for _ in range(ctx["warmup"]):
        sgd_step(model, opt, x, y, ctx["dtype"])
    sync(ctx["device"])
    t0 = time.perf_counter()
    for _ in range(ctx["steps"]):
        sgd_step(model, opt, x, y, ctx["dtype"])
    sync(ctx["device"])
    return ctx["steps"] * n / (time.perf_counter() - t0)


def standard(ctx: dict) -> float:
    """Images/s of the usual recipe: per-image PIL transforms in DataLoader workers."""
    model, opt = ctx["new_model"](False)
    mean, std = channel_stats("cifar10")
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(mean, std),
    ])
    dev = ctx["device"]
    loader = DataLoader(
        PILImages(ctx["images"], ctx["labels"], tf), batch_size=ctx["batch"], shuffle=True,
        num_workers=ctx["workers"], drop_last=True, pin_memory=dev.type == "cuda",
        persistent_workers=False,
    )
    # The loader spans the whole train set, so its workers still prefetch when timing stops,
    # as many batches ahead as they had prefetched when it started.
    batches = iter(loader)
    for i in range(ctx["warmup"] + ctx["steps"]):
        if i == ctx["warmup"]:
            sync(dev)
            t0 = time.perf_counter()
        x, y = next(batches)
        x = x.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
        sgd_step(model, opt, x, y.to(dev, non_blocking=True), ctx["dtype"])
    sync(dev)
    seconds = time.perf_counter() - t0
    # Stops the workers now rather than at garbage collection: they would go on prefetching
    # and take CPU from the next loop's measurement.
    del batches
    return ctx["steps"] * ctx["batch"] / seconds


def ours(ctx: dict) -> float:
    """Images/s of nbutils.train.train_epoch over device-resident uint8 images."""
    model, opt = ctx["new_model"](ctx["compile"])
    n_warm = ctx["warmup"] * ctx["batch"]
    n_timed = ctx["steps"] * ctx["batch"]
    common = dict(model=model, opt=opt, cfg=ctx["cfg"], stats=ctx["stats"], dtype=ctx["dtype"],
                  ddp=Dist(), progress=False)
    train_epoch(images=ctx["x"][:n_warm], labels=ctx["y"][:n_warm], epoch=1, **common)
    sync(ctx["device"])
    t0 = time.perf_counter()
    # train_epoch returns host floats, so the device is idle when it returns.
    train_epoch(images=ctx["x"][:n_timed], labels=ctx["y"][:n_timed], epoch=2, **common)
    return n_timed / (time.perf_counter() - t0)


def synthetic(n: int) -> Split:
    """n seeded random CIFAR-shaped images with 10 balanced labels."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    return Split(images, np.arange(n, dtype=np.int64) % 10)


def context(args: argparse.Namespace) -> dict:
    """Data, model factory and settings shared by the three loops."""
    device = select_device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    cfg = resolve("cpu", width=args.width, batch_size=args.batch_size, device=args.device,
                  data_root=args.data_root)
    train = synthetic(args.synthetic) if args.synthetic else load_cifar(args.data_root)[0]
    n = args.batch_size * (args.warmup + args.steps)
    if n > len(train):
        raise SystemExit(f"--steps/--warmup/--batch-size need {n} images; train has {len(train)}")
    labels = coarse_mapping("mod5")[train.labels]

    def new_model(compiled: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """The same seeded model (compiled if asked) and a fresh optimizer."""
        model = build_model(cfg, 5, device)
        opt = make_optimizer(cfg, model)
        return (torch.compile(model, mode=args.compile_mode) if compiled else model), opt

    return dict(
        cfg=cfg, device=device, dtype=amp_dtype(args.amp, device), new_model=new_model,
        images=train.images, labels=labels, x=to_tensor(train.images, device),
        y=torch.from_numpy(labels).to(device), batch=args.batch_size, steps=args.steps,
        warmup=args.warmup, workers=args.workers, compile=args.compile,
        stats=stats_tensors("cifar10", device),
    )


LOOPS = {"bare": bare_step, "standard": standard, "ours": ours}
ROWS = {
    "bare": "bare step: fixed pre-normalised batch (ceiling)",
    "standard": "standard: DataLoader, {workers} workers, PIL transforms",
    "ours": "ours: train_epoch, device-resident uint8, batched aug",
}


def measure(args: argparse.Namespace) -> None:
    """Measure the chosen loops and print the table; the last line is the ratio."""
    ctx = context(args)
    names = args.loops.split(",")
    best = dict.fromkeys(names, 0.0)
    load_before = load()
    for _ in range(args.rounds):
        for name in names:
            best[name] = max(best[name], LOOPS[name](ctx))
    amp = str(ctx["dtype"]).replace("torch.", "") if ctx["dtype"] else "off"
    dev = ctx["device"]
    where = (f"cpu, {torch.get_num_threads()} threads" if dev.type == "cpu"
             else torch.cuda.get_device_name(dev))
    data = f"{args.synthetic} synthetic images" if args.synthetic else "CIFAR-10"
    print(f"ResNet-18 width {args.width}, batch {args.batch_size}, {args.steps} timed steps after "
          f"{args.warmup} warm-up, best of {args.rounds} rounds, device {where}, amp {amp}, "
          f"{'compiled ' + args.compile_mode if args.compile else 'eager'}, "
          f"cudnn.benchmark {args.cudnn_benchmark}, {data}")
    print(f"load average (1/5/15 min): before {load_before}, after {load()}")
    ref = {k: best[k] for k in ("standard", "bare") if k in best}
    print(f"{'loop':<56} {'img/s':>8}" + "".join(f" {'/ ' + k:>11}" for k in ref))
    for name in names:
        label = ROWS[name].format(workers=args.workers)
        print(f"{label:<56} {best[name]:>8.0f}"
              + "".join(f" {best[name] / v:>11.2f}" for v in ref.values()))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"device": where, "width": args.width, "batch_size": args.batch_size, "amp": amp,
             "compile": args.compile and args.compile_mode,
             "cudnn_benchmark": args.cudnn_benchmark, "img_per_s": best}, indent=1))
    if "ours" in best and "standard" in best and "bare" in best:
        ratio, ceiling = best["ours"] / best["standard"], best["ours"] / best["bare"]
        print(f"targets: ours/standard {ratio:.2f} (>= 1.3: "
              f"{'met' if ratio >= 1.3 else 'NOT met'}), ours/bare {ceiling:.2f} "
              f"(>= 0.85: {'met' if ceiling >= 0.85 else 'NOT met'})")
        print(f"ratio {ratio:.3f}")
    elif "ours" in best and ref:
        key = next(iter(ref))
        print(f"ratio {best['ours'] / best[key]:.3f}")


if __name__ == "__main__":
    run(parse_args, measure)
