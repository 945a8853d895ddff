"""Pilot of the collapse-strength cells: does the `full` budget hold the phase at this weight decay?

Stronger weight decay collapses the features more and fits the train set more slowly, so each
cell of the weight-decay comparison (lr 0.1, weight decay 5e-3 / 5e-4 / 5e-5) must first show,
on clean train accuracy alone, that the `full` recipe's budget holds the terminal phase over at
least half of training (docs/protocol.md, section 11). This trains the coarse model of one cell
(no baseline: the cells share the 10-label baseline of their seed) and records its clean coarse
train accuracy at every checkpoint, the phase it reaches, and the cost. Nothing is read from the
test split. The run directory is kept: when the budget holds, the run is that cell's seed.

    python scripts/full_wd_pilot.py --weight-decay 5e-3 --out figures/full/wd_pilot.json

Each call adds (or replaces) its (weight decay, seed) entry in `--out`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from nbutils import stages
from nbutils.paths import REPO
from nbutils.phase import clean_train_curve, terminal_phase
from nbutils.runs import load_json, model_dir, save_json

# The weight-decay cells hold the phase over at least this share of training (twice the
# protocol's minimum), so that what changes inside the phase can be measured.
HOLD = 0.5


def pilot(weight_decay: float, seed: int, root: Path, data_root: str | None,
          profile: str = "full", **overrides: Any) -> dict[str, Any]:
    """Train one cell's coarse model; its clean train curve, phase and cost."""
    cfg = stages.configure(profile, run_dir=str(root / f"wd{weight_decay:g}" / f"seed{seed}"),
                           data_root=data_root, weight_decay=weight_decay, seed=seed,
                           train_baseline=False, **overrides)
    log = stages.train(cfg, progress=False)["coarse"]
    curve = clean_train_curve(log)
    meta = load_json(model_dir(cfg, "coarse") / "train_meta.json")
    return {
        "profile": profile, "weight_decay": weight_decay, "seed": seed, "lr": cfg.lr,
        "epochs": cfg.epochs, "step_milestones": cfg.step_milestones, "augment": cfg.augment,
        "run_dir": os.path.relpath(cfg.run_dir, REPO),
        "checkpoint_epochs": curve["epochs"], "clean_coarse_train_acc": curve["accs"],
        "terminal_phase": terminal_phase(curve["epochs"], curve["accs"], hold=HOLD),
        "train_seconds": sum(row["seconds"] for row in log),
        "clean_eval_seconds": sum(row.get("clean_eval_seconds", 0.0) for row in log),
        "amp": meta["amp"], "environment": meta.get("environment"),
        "weights_sha256": {row["epoch"]: row["weights_sha256"] for row in log
                           if "weights_sha256" in row},
    }


def main() -> None:
    """Pilot one cell and merge its entry into the output JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weight-decay", dest="weight_decay", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=Path("runs") / "full-wd")
    parser.add_argument("--data-root", dest="data_root")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--epochs", type=int, help="override the profile's budget (a new pilot)")
    args = parser.parse_args()
    overrides = {"epochs": args.epochs} if args.epochs else {}
    row = pilot(args.weight_decay, args.seed, args.root, args.data_root, args.profile,
                **overrides)
    old = load_json(args.out)["cells"] if args.out.is_file() else []
    cells = [c for c in old if (c["weight_decay"], c["seed"], c["epochs"]) !=
             (row["weight_decay"], row["seed"], row["epochs"])] + [row]
    cells.sort(key=lambda c: (c["weight_decay"], c["seed"], c["epochs"]))
    save_json(args.out, {"question": "does the full recipe's budget hold the terminal phase "
                                     f"over at least {HOLD:.0%} of training at this weight "
                                     "decay? (clean coarse train accuracy only)",
                         "hold": HOLD, "cells": cells})
    phase = row["terminal_phase"]
    print(f"weight decay {args.weight_decay:g}, seed {args.seed}, {row['epochs']} epochs: "
          f"phase {'held' if phase['reached'] else 'not held'} from epoch "
          f"{phase['onset_epoch']} ({phase['held_fraction']:.0%} of training); "
          f"{row['train_seconds'] / 60:.1f} min of training")


if __name__ == "__main__":
    main()
