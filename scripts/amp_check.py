"""Does bf16 autocast keep the accuracy? (docs/protocol.md, section 8:
keep it only within half a point of float32.)

Trains the coarse model of a profile with `amp=bf16` and `amp=off` for each seed, on a
validation split carved out of train (`val_per_class` images per class; the test set is not
looked at), and writes the final validation accuracies, their differences and the epoch times:

    python scripts/amp_check.py --profile cpu --epochs 10 --seeds 0 1 \\
        --out figures/cpu/amp_check.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nbutils.config import resolve  # noqa: E402
from nbutils.runs import create_run, save_json, versions  # noqa: E402
from nbutils.train import train_model  # noqa: E402

AMPS = ("bf16", "off")


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--val-per-class", type=int, default=500)
    p.add_argument("--data-root")
    p.add_argument("--runs", default="runs/amp_check", help="parent of the run directories")
    p.add_argument("--out", required=True, help="JSON file to write")
    return p.parse_args()


def train_one(args: argparse.Namespace, amp: str, seed: int) -> dict:
    """Train the coarse model once; its last validation accuracy and mean epoch time."""
    cfg = resolve(args.profile, run_dir=f"{args.runs}/{amp}-seed{seed}", epochs=args.epochs,
                  seed=seed, amp=amp, val_per_class=args.val_per_class, train_baseline=False,
                  checkpoint_epochs=[args.epochs], data_root=args.data_root)
    create_run(cfg)
    log = train_model(cfg, "coarse", progress=False)
    return {"amp": amp, "seed": seed, "val_acc": log[-1]["test_acc"],
            "train_acc": log[-1]["train_acc"],
            "epoch_seconds": statistics.median(row["seconds"] for row in log)}


def main() -> None:
    """Train every (amp, seed) pair and write the comparison."""
    args = parse_args()
    rows = []
    for seed in args.seeds:
        for amp in AMPS:
            rows.append(train_one(args, amp, seed))
            print(rows[-1], flush=True)
    acc = {amp: [r["val_acc"] for r in rows if r["amp"] == amp] for amp in AMPS}
    diffs = [b - f for b, f in zip(acc["bf16"], acc["off"], strict=True)]
    mean_diff = statistics.mean(diffs)
    save_json(Path(args.out), {
        "question": ("bf16 autocast against float32: coarse validation accuracy "
                     "(docs/protocol.md, section 8)"),
        "profile": args.profile, "epochs": args.epochs, "seeds": args.seeds,
        "val_per_class": args.val_per_class, "runs": rows,
        "val_acc_bf16_minus_fp32": diffs, "mean_difference": mean_diff,
        "within_half_a_point": abs(mean_diff) <= 0.005,
        "note": "epoch_seconds are as logged and depend on what else the machine ran; the "
                "speed of bf16 is measured by benchmarks/train_throughput.py --amp",
        "versions": versions(),
    })
    print(f"bf16 - fp32 validation accuracy: {', '.join(f'{d:+.4f}' for d in diffs)} "
          f"(mean {mean_diff:+.4f})")


if __name__ == "__main__":
    main()
