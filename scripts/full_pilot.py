"""Pilot a variant of the `full` recipe on clean train accuracy: does its budget hold the phase?

Two questions use it, each with its own output file:
- the collapse-strength cells (lr 0.1, weight decay 5e-3 / 5e-4 / 5e-5): stronger weight decay fits
  the train set more slowly, so each cell must first show that its budget holds the terminal phase
  over at least half of training (docs/protocol.md, section 11);

      python scripts/full_pilot.py --weight-decay 5e-3 --epochs 80 --out figures/full/wd_pilot.json

- the augmented regime (random crop and flip, the paper's recipe): whether the narrow network fits
  its augmented train set within a budget this machine can afford;

      python scripts/full_pilot.py --augment --weight-decay 5e-5 --epochs 60 \\
          --out figures/full/aug_pilot.json

This trains the coarse model only (the cells share the 10-label baseline of their seed) and
records its clean coarse train accuracy at every checkpoint, the phase it reaches, and the cost.
Nothing is read from the test split. The run directory is kept: when the budget holds, the run is
that setting's seed 0. Each call adds (or replaces) its setting's entry in `--out`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from nbutils import stages
from nbutils.config import resolve
from nbutils.paths import REPO
from nbutils.phase import clean_train_curve, terminal_phase
from nbutils.runs import load_json, model_dir, save_json

# A pilot passes when the phase holds over at least this share of training (twice the
# protocol's minimum), so that what changes inside the phase can be measured.
HOLD = 0.5

# What makes two entries of one output file the same setting (a new call replaces the old entry).
SETTING = ("weight_decay", "augment", "epochs", "step_milestones", "seed")


def run_name(weight_decay: float, epochs: int, augment: bool) -> str:
    """The pilot's run directory name: its weight decay, budget and augmentation."""
    return f"wd{weight_decay:g}-e{epochs}" + ("-aug" if augment else "")


def pilot(weight_decay: float, seed: int, root: Path, data_root: str | None,
          profile: str = "full", **overrides: Any) -> dict[str, Any]:
    """Train one setting's coarse model; its clean train curve, phase and cost."""
    cfg = resolve(profile, weight_decay=weight_decay, seed=seed, **overrides)
    run_dir = root / run_name(weight_decay, cfg.epochs, cfg.augment) / f"seed{seed}"
    cfg = stages.configure(profile, run_dir=str(run_dir), data_root=data_root,
                           weight_decay=weight_decay, seed=seed, train_baseline=False,
                           **overrides)
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


def merge(old: list[dict[str, Any]], row: dict[str, Any]) -> list[dict[str, Any]]:
    """`old` entries with `row` added, replacing an entry of the same setting; sorted."""
    def key(c: dict[str, Any]) -> tuple:
        return tuple(str(c.get(k, False)) if k in ("augment", "step_milestones") else c[k]
                     for k in SETTING)
    cells = [c for c in old if key(c) != key(row)] + [row]
    return sorted(cells, key=key)


def main() -> None:
    """Pilot one setting and merge its entry into the output JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weight-decay", dest="weight_decay", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=Path("runs") / "full-pilot")
    parser.add_argument("--data-root", dest="data_root")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--epochs", type=int, help="override the profile's budget")
    parser.add_argument("--augment", action="store_true",
                        help="random crop and flip (the profile trains without)")
    parser.add_argument("--milestones", type=float, nargs="+",
                        help="lr drops (x0.1) as fractions of training; default the profile's")
    args = parser.parse_args()
    overrides: dict[str, Any] = {}
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.augment:
        overrides["augment"] = True
    if args.milestones:
        overrides["step_milestones"] = args.milestones
    row = pilot(args.weight_decay, args.seed, args.root, args.data_root, args.profile,
                **overrides)
    old = load_json(args.out)["cells"] if args.out.is_file() else []
    save_json(args.out, {"question": "does this variant of the full recipe hold the terminal "
                                     f"phase over at least {HOLD:.0%} of training? (clean "
                                     "coarse train accuracy only)",
                         "hold": HOLD, "cells": merge(old, row)})
    phase = row["terminal_phase"]
    print(f"weight decay {args.weight_decay:g}, augment {row['augment']}, seed {args.seed}, "
          f"{row['epochs']} epochs: phase {'held' if phase['reached'] else 'not held'} from "
          f"epoch {phase['onset_epoch']} ({phase['held_fraction']:.0%} of training); "
          f"{row['train_seconds'] / 60:.1f} min of training")


if __name__ == "__main__":
    main()
