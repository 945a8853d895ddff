"""Training throughput: our device-resident loop against the standard DataLoader recipe.

All three loops train the same seeded ResNet-18 (channels_last, same SGD, batch and autocast)
on the same real CIFAR-10 images with coarse (mod5) labels, in this one process:

- bare step: forward + backward + step on one fixed, pre-normalised batch (the ceiling);
- standard: torchvision-style Dataset of PIL images with RandomCrop(32, padding=4),
  RandomHorizontalFlip, ToTensor, Normalize, through a DataLoader with worker processes;
- ours: nbutils.train.train_epoch on uint8 images held on the device, batched augmentation;
- captured (not run by default): ours with the index gather, crop, flip and normalisation moved
  into the compiled forward (`prepare_batch`), so that CUDA graphs hold the whole step but for
  the generator's draws, which stay outside and in data.augment's order.

Each loop runs `--warmup` untimed steps, then `--steps` timed ones; every round measures the
loops in turn and the best round of each counts (the machine may be busy with other work).
`--synthetic N` trains on N seeded random images instead (for a machine without the data:
the step's cost does not depend on the pixels). `--compile` wraps the bare and our models in
`torch.compile` (the standard recipe stays eager, as it is usually run). The last line is
`ratio <ours / standard>` (`ratio <ours / bare>` when the standard loop is not run, `ratio
<captured / ours>` when only those two are).

`--concurrent N` runs this benchmark as one process alone, then as N processes at once on the
same device (each its own model, as N trainings would be), timing each loop from the moment
every process has warmed up. Together they count their images over the span from the first
start to the last end; the last line is then `ratio <together / one alone>` for ours (bare
when ours is not run).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from nbutils.train import build_model, epoch_generator, lr_at, make_optimizer, train_epoch

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    p.add_argument("--concurrent", type=int, default=1, metavar="N",
                   help="also run N processes at once and report together / one alone")
    # Set by --concurrent for its processes: where they meet before each timed loop.
    p.add_argument("--barrier", help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    loops = args.loops.split(",")
    if not loops or set(loops) - set(LOOPS):
        p.error(f"--loops: got {args.loops!r}; allowed: a comma-separated subset of "
                f"{', '.join(LOOPS)}")
    if args.concurrent < 1:
        p.error(f"--concurrent: must be a positive integer, got {args.concurrent}")
    return args


@dataclass
class Window:
    """Images trained in one timed loop, between two wall-clock times (comparable across
    processes)."""

    images: int
    start: float
    end: float

    @property
    def rate(self) -> float:
        """Images per second."""
        return self.images / (self.end - self.start)


def make_barrier(folder: str | None, rank: int, world: int) -> Callable[[], None]:
    """Wait until all `world` processes make the same call (files in `folder`); alone, a no-op."""
    if folder is None or world == 1:
        return lambda: None
    calls = itertools.count()

    def wait() -> None:
        """Mark this process as ready, then wait for the others (10 minutes at most)."""
        tag = next(calls)
        Path(folder, f"{tag}.{rank}").touch()
        give_up = time.monotonic() + 600
        while len(list(Path(folder).glob(f"{tag}.*"))) < world:
            if time.monotonic() > give_up:
                raise SystemExit(f"barrier {tag}: the other processes did not arrive")
            time.sleep(0.005)

    return wait


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


def bare_step(ctx: dict) -> Window:
    """The step alone, on one fixed pre-normalised batch."""
    model, opt = ctx["new_model"](ctx["compile"])
    n = ctx["batch"]
    x = normalize(ctx["x"][:n], *ctx["stats"]).contiguous(memory_format=torch.channels_last)
    y = ctx["y"][:n]
    for _ in range(ctx["warmup"]):
        sgd_step(model, opt, x, y, ctx["dtype"])
    sync(ctx["device"])
    ctx["barrier"]()
    t0 = time.time()
    for _ in range(ctx["steps"]):
        sgd_step(model, opt, x, y, ctx["dtype"])
    sync(ctx["device"])
    return Window(ctx["steps"] * n, t0, time.time())


def standard(ctx: dict) -> Window:
    """The usual recipe: per-image PIL transforms in DataLoader workers."""
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
            ctx["barrier"]()
            t0 = time.time()
        x, y = next(batches)
        x = x.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
        sgd_step(model, opt, x, y.to(dev, non_blocking=True), ctx["dtype"])
    sync(dev)
    window = Window(ctx["steps"] * ctx["batch"], t0, time.time())
    # Stops the workers now rather than at garbage collection: they would go on prefetching
    # and take CPU from the next loop's measurement.
    del batches
    return window


def ours(ctx: dict) -> Window:
    """nbutils.train.train_epoch over device-resident uint8 images."""
    model, opt = ctx["new_model"](ctx["compile"])
    n_warm = ctx["warmup"] * ctx["batch"]
    n_timed = ctx["steps"] * ctx["batch"]
    common = dict(model=model, opt=opt, cfg=ctx["cfg"], stats=ctx["stats"], dtype=ctx["dtype"],
                  ddp=Dist(), progress=False)
    train_epoch(images=ctx["x"][:n_warm], labels=ctx["y"][:n_warm], epoch=1, **common)
    sync(ctx["device"])
    ctx["barrier"]()
    t0 = time.time()
    # train_epoch returns host floats, so the device is idle when it returns.
    train_epoch(images=ctx["x"][:n_timed], labels=ctx["y"][:n_timed], epoch=2, **common)
    return Window(n_timed, t0, time.time())


def draw(n: int, generator: torch.Generator, padding: int = 4) -> tuple[torch.Tensor, ...]:
    """The random numbers nbutils.data.augment draws for a batch of n, in its order."""
    offs = torch.randint(0, 2 * padding + 1, (2, n), generator=generator,
                         device=generator.device)
    flip = torch.rand(n, generator=generator, device=generator.device) < 0.5
    return offs, flip


def crop_flip(batch: torch.Tensor, offs: torch.Tensor, flip: torch.Tensor,
              padding: int = 4) -> torch.Tensor:
    """augment's crop (zero padding) and flip from drawn numbers: no generator, so capturable."""
    n, c, h, w = batch.shape
    dev = batch.device
    padded = F.pad(batch, (padding, padding, padding, padding))
    rows = (offs[0][:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = torch.arange(w, device=dev)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + offs[1][:, None]
    idx_n = torch.arange(n, device=dev)[:, None, None, None]
    idx_c = torch.arange(c, device=dev)[None, :, None, None]
    return padded[idx_n, idx_c, rows, cols[:, None, None, :]]


def prepare_batch(images: torch.Tensor, idx: torch.Tensor, offs: torch.Tensor,
                  flip: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """What train_epoch does to a batch before the model: gather, crop + flip, normalise."""
    x = crop_flip(images[idx], offs, flip)
    return normalize(x, mean, std).contiguous(memory_format=torch.channels_last)


class CapturedStep(torch.nn.Module):
    """Batch preparation and the model's forward as one module, compiled as one graph."""

    def __init__(self, model: torch.nn.Module, images: torch.Tensor, stats: tuple) -> None:
        super().__init__()
        self.model, self.images, self.stats = model, images, stats

    def forward(self, idx: torch.Tensor, offs: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Logits of the prepared batch."""
        return self.model(prepare_batch(self.images, idx, offs, flip, *self.stats))


def captured(ctx: dict) -> Window:
    """Ours with the gather and augmentation inside the compiled forward."""
    model, opt = ctx["new_model"](False)
    step = CapturedStep(model, ctx["x"], ctx["stats"])
    if ctx["compile"]:
        step = torch.compile(step, mode=ctx["compile_mode"])
    n_timed = ctx["steps"] * ctx["batch"]
    for epoch, n_images in ((1, ctx["warmup"] * ctx["batch"]), (2, n_timed)):
        if epoch == 2:
            sync(ctx["device"])
            ctx["barrier"]()
            t0 = time.time()
        captured_epoch(step, opt, ctx, epoch, n_images)
    sync(ctx["device"])
    return Window(n_timed, t0, time.time())


def captured_epoch(step: torch.nn.Module, opt: torch.optim.Optimizer, ctx: dict, epoch: int,
                   n_images: int) -> None:
    """One epoch over the first n_images as train_epoch steps it, drawing in its order."""
    cfg, dev = ctx["cfg"], ctx["device"]
    gen = epoch_generator(cfg, epoch, dev)
    order = torch.randperm(n_images, generator=gen, device=dev)
    steps = -(-n_images // ctx["batch"])
    for i in range(steps):
        idx = order[i * ctx["batch"]:(i + 1) * ctx["batch"]]
        offs, flip = draw(len(idx), gen)
        for group in opt.param_groups:
            group["lr"] = lr_at((epoch - 1) * steps + i, steps * cfg.epochs, cfg)
        with autocast(dev, ctx["dtype"]):
            loss = F.cross_entropy(step(idx, offs, flip).float(), ctx["y"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


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
        compile_mode=args.compile_mode, stats=stats_tensors("cifar10", device),
        barrier=make_barrier(args.barrier, args.rank, args.world),
    )


LOOPS = {"bare": bare_step, "standard": standard, "ours": ours, "captured": captured}
ROWS = {
    "bare": "bare step: fixed pre-normalised batch (ceiling)",
    "standard": "standard: DataLoader, {workers} workers, PIL transforms",
    "ours": "ours: train_epoch, device-resident uint8, batched aug",
    "captured": "captured: ours, gather and aug inside the compiled graph",
}


def header(args: argparse.Namespace, where: str, amp: str) -> str:
    """The first line of the output: what was measured, where."""
    data = f"{args.synthetic} synthetic images" if args.synthetic else "CIFAR-10"
    return (f"ResNet-18 width {args.width}, batch {args.batch_size}, {args.steps} timed steps "
            f"after {args.warmup} warm-up, best of {args.rounds} rounds, device {where}, amp "
            f"{amp}, {'compiled ' + args.compile_mode if args.compile else 'eager'}, "
            f"cudnn.benchmark {args.cudnn_benchmark}, {data}")


def measure(args: argparse.Namespace) -> None:
    """Measure the chosen loops and print the table; the last line is the ratio."""
    if args.concurrent > 1:
        measure_concurrent(args)
        return
    ctx = context(args)
    names = args.loops.split(",")
    best = dict.fromkeys(names, 0.0)
    windows: dict[str, list[list[float]]] = {name: [] for name in names}
    load_before = load()
    for _ in range(args.rounds):
        for name in names:
            window = LOOPS[name](ctx)
            windows[name].append([window.images, window.start, window.end])
            best[name] = max(best[name], window.rate)
    amp = str(ctx["dtype"]).replace("torch.", "") if ctx["dtype"] else "off"
    dev = ctx["device"]
    where = (f"cpu, {torch.get_num_threads()} threads" if dev.type == "cpu"
             else torch.cuda.get_device_name(dev))
    print(header(args, where, amp))
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
             "cudnn_benchmark": args.cudnn_benchmark, "concurrent": 1, "img_per_s": best,
             "windows": windows}, indent=1))
    if "ours" in best and "standard" in best and "bare" in best:
        ratio, ceiling = best["ours"] / best["standard"], best["ours"] / best["bare"]
        print(f"targets: ours/standard {ratio:.2f} (>= 1.3: "
              f"{'met' if ratio >= 1.3 else 'NOT met'}), ours/bare {ceiling:.2f} "
              f"(>= 0.85: {'met' if ceiling >= 0.85 else 'NOT met'})")
        print(f"ratio {ratio:.3f}")
    elif "ours" in best and ref:
        key = next(iter(ref))
        print(f"ratio {best['ours'] / best[key]:.3f}")
    elif "ours" in best and "captured" in best:
        print("ratio below: captured / ours")
        print(f"ratio {best['captured'] / best['ours']:.3f}")


def child_argv(args: argparse.Namespace) -> list[str]:
    """The flags of one process of a concurrent measurement (all but --concurrent, --json)."""
    argv = ["--width", args.width, "--batch-size", args.batch_size, "--steps", args.steps,
            "--warmup", args.warmup, "--rounds", args.rounds, "--workers", args.workers,
            "--device", args.device, "--amp", args.amp, "--loops", args.loops,
            "--compile-mode", args.compile_mode]
    for flag, value in (("--threads", args.threads), ("--data-root", args.data_root),
                        ("--synthetic", args.synthetic)):
        if value is not None:
            argv += [flag, value]
    argv += [flag for flag, on in (("--compile", args.compile),
                                   ("--cudnn-benchmark", args.cudnn_benchmark)) if on]
    return [str(a) for a in argv]


def run_processes(args: argparse.Namespace, n: int, folder: Path) -> list[dict]:
    """Run this benchmark as n processes at once (meeting before each timed loop); their JSON."""
    barrier = folder / f"barrier{n}"
    barrier.mkdir()
    outs = [folder / f"n{n}_rank{r}.json" for r in range(n)]
    procs = [subprocess.Popen(
        [sys.executable, __file__, *child_argv(args), "--json", str(out), "--barrier",
         str(barrier), "--rank", str(r), "--world", str(n)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for r, out in enumerate(outs)]
    errors = [p.communicate()[1] for p in procs]
    failed = [f"rank {r}: {err.strip().splitlines()[-1] if err.strip() else p.returncode}"
              for r, (p, err) in enumerate(zip(procs, errors, strict=True)) if p.returncode]
    if failed:
        raise SystemExit(f"--concurrent {n}: a process failed ({'; '.join(failed)})")
    return [json.loads(out.read_text()) for out in outs]


def together(results: list[dict], loop: str) -> float:
    """Images/s of the processes together: each round's images over the span from the first
    start to the last end, the best round."""
    rounds = zip(*(r["windows"][loop] for r in results), strict=True)
    return max(sum(w[0] for w in ws) / (max(w[2] for w in ws) - min(w[1] for w in ws))
               for ws in rounds)


def measure_concurrent(args: argparse.Namespace) -> None:
    """One process alone, then --concurrent processes at once; the last line is the ratio."""
    names = args.loops.split(",")
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="throughput_") as tmp:
        alone = run_processes(args, 1, Path(tmp))[0]
        many = run_processes(args, args.concurrent, Path(tmp))
    n = args.concurrent
    print(header(args, alone["device"], alone["amp"]) + f"; {n} processes at once")
    print(f"load average (1/5/15 min): before {load_before}, after {load()}")
    agg = {name: together(many, name) for name in names}
    each = {name: [r["img_per_s"][name] for r in many] for name in names}
    print(f"{'loop':<56} {'alone':>8} {f'{n} at once, each':>24} {'together':>9} "
          f"{'/ alone':>8}")
    for name in names:
        label = ROWS[name].format(workers=args.workers)
        rates = ", ".join(f"{v:.0f}" for v in each[name])
        print(f"{label:<56} {alone['img_per_s'][name]:>8.0f} {rates:>24} {agg[name]:>9.0f} "
              f"{agg[name] / alone['img_per_s'][name]:>8.2f}")
    key = "ours" if "ours" in names else names[0]
    if args.json:
        Path(args.json).write_text(json.dumps(
            {**{k: alone[k] for k in ("device", "width", "batch_size", "amp", "compile",
                                      "cudnn_benchmark")},
             "concurrent": n, "img_per_s": {k: sum(v) / n for k, v in each.items()},
             "per_process": each, "aggregate": agg, "aggregate_img_per_s": agg[key],
             "alone_img_per_s": alone["img_per_s"]}, indent=1))
    print(f"ratio below: {key}, {n} processes together / one alone")
    print(f"ratio {agg[key] / alone['img_per_s'][key]:.3f}")


if __name__ == "__main__":
    run(parse_args, measure)
