"""Evaluation batch size: feature extraction and test evaluation at several batch sizes.

Ours: `nbutils.features.extract` (float32, no autocast, as notebook 02 extracts features) and
`nbutils.train.evaluate` (under the run's autocast, as training evaluates the test set) at each
`--batch-sizes` entry. Baseline: the same calls at `--baseline` images per batch (1024, the
`paper` profile's `eval_batch_size`, made for a GPU). The model is a seeded ResNet-18 of
`--width` (the cost of a forward pass does not depend on its weights) on `--images` test images
of CIFAR-10, or seeded random images with `--synthetic`.

Every batch size must give the baseline's features to 1e-4 (absolute, on features of order 1)
and its test accuracy exactly: a batch size should change only how the work is cut, not what
is computed (the table shows the largest feature difference and the head predictions that
changed). It gives img/s of both calls per batch size and the ratio to the baseline; the last
line is `ratio <ours / baseline>` for extraction at `--ours` images per batch (default the CPU
profiles' `eval_batch_size`, `nbutils.config.CPU_EVAL_BATCH`).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import load, run

from nbutils.config import CPU_EVAL_BATCH
from nbutils.data import load_cifar, stats_tensors, to_tensor
from nbutils.device import amp_dtype
from nbutils.features import extract
from nbutils.models import ResNet18
from nbutils.train import evaluate

ATOL = 1e-4


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="512,256,128,64,32",
                   help="comma-separated batch sizes to time against the baseline")
    p.add_argument("--baseline", type=int, default=1024)
    p.add_argument("--ours", type=int, default=CPU_EVAL_BATCH,
                   help="the batch size whose extraction ratio the last line gives")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--images", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=2, help="best of this many timings per call")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"))
    p.add_argument("--data-root", default=None, help="CIFAR-10 npz cache (default $NBUTILS_DATA)")
    p.add_argument("--synthetic", action="store_true", help="seeded random images, no data")
    p.add_argument("--threads", type=int,
                   help="cap on torch and BLAS/OpenMP threads (default: every core)")
    return p.parse_args()


def images(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 NCHW images, labels in 0-4) of the first `--images` test images, or random ones."""
    if args.synthetic:
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen)
        return x, torch.arange(args.images) % 5
    test = load_cifar(args.data_root, download=False)[1]
    return (to_tensor(test.images[:args.images], torch.device("cpu")),
            torch.from_numpy(test.labels[:args.images] % 5))


def best_rate(fn, n: int, rounds: int) -> float:
    """Images per second of fn() over n images, best of `rounds` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def measure(args: argparse.Namespace) -> None:
    """Time both calls per batch size, check the features agree, print the table and ratio."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = ResNet18(num_classes=5, width=args.width).to(memory_format=torch.channels_last)
    x, y = images(args)
    stats = stats_tensors("cifar10", device)
    dtype = amp_dtype(args.amp, device)
    sizes = [args.baseline, *(int(b) for b in args.batch_sizes.split(","))]
    if args.ours not in sizes:
        sizes.append(args.ours)
    before = load()
    ref_feats, ref_preds = extract(model, x, stats, args.baseline)
    ref_acc = evaluate(model, x, y, stats, args.baseline, dtype)[1]
    rows = {}
    for bs in sizes:
        feats, preds = extract(model, x, stats, bs)
        diff = float(np.abs(feats - ref_feats).max())
        flips = int((preds != ref_preds).sum())
        if diff > ATOL or evaluate(model, x, y, stats, bs, dtype)[1] != ref_acc:
            raise SystemExit(f"batch {bs}: features differ from batch {args.baseline} by {diff}"
                             " or the test accuracy differs")
        rows[bs] = (best_rate(lambda b=bs: extract(model, x, stats, b), len(x), args.rounds),
                    best_rate(lambda b=bs: evaluate(model, x, y, stats, b, dtype), len(x),
                              args.rounds), diff, flips)
    print(f"ResNet-18 width {args.width}, {len(x)} {'random' if args.synthetic else 'CIFAR-10'}"
          f" images, {torch.get_num_threads()} threads, evaluate under "
          f"{str(dtype).replace('torch.', '') if dtype else 'float32'}, best of {args.rounds}")
    print(f"load average (1/5/15 min): before {before}, after {load()}")
    base_x, base_e = rows[args.baseline][:2]
    print(f"{'batch':>6} {'extract img/s':>14} {'/ base':>7} {'evaluate img/s':>15} {'/ base':>7}"
          f" {'max |feature diff|':>19} {'pred flips':>11}")
    for bs, (rx, re, diff, flips) in rows.items():
        print(f"{bs:>6} {rx:>14.0f} {rx / base_x:>7.2f} {re:>15.0f} {re / base_e:>7.2f}"
              f" {diff:>19.1e} {flips:>11}")
    print(f"ratio {rows[args.ours][0] / base_x:.3f}")


if __name__ == "__main__":
    run(parse_args, measure)
