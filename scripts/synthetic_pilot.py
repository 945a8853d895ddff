"""Pilot for a synthetic setting that passes through Neural Collapse (notebook 10, issue 12).

The former default (d=32, class centres 8 noise-std apart, 256 hidden units) has a coarse NC1
of about 0.1 already at initialisation: NC1 = tr(Sigma_W Sigma_B^+) / K only sees the noise
along the K-1 directions of the class means, and with centres 8 noise-std apart the raw inputs
give 2 (K-1) / 8^2 = 0.094 (K=4); a random ReLU layer of 256 units on 32 inputs keeps that
geometry, so there is nothing left to collapse. Two ways to a large NC1 at initialisation:

- centres closer together (or fine clusters on opposite sides of nearly coincident centres):
  the inputs themselves have a large NC1, but the coarse classes then overlap (or are not
  linearly separable), so the terminal phase needs memorisation, if it comes at all;
- many noise dimensions and a hidden layer narrower than the input: a random layer mixes all
  d noise dimensions into the few directions of the class means, raising NC1 about d / h-fold,
  while the classes stay separable; training has to learn to read the 12 signal directions.

Each candidate is trained here on separations 0, 4 and 8 with seeds 0 and 1 (the sweep's
recipe otherwise: SGD with momentum 0.9, weight decay 5e-4, batch 128, 100 epochs, k-means on
l2-normalised hidden features with n_init 10) and judged on three criteria, in every run:
coarse NC1 of the hidden layer at initialisation >= 1, a fall of at least 10x by the end, and
the terminal phase (clean coarse train accuracy >= 99.5% held over >= 30% of training, read
per epoch by nbutils.phase.terminal_phase). Among the candidates meeting all three, the one
whose terminal phase starts latest is chosen, so that the passage through collapse spans
several checkpoints. The candidates were narrowed from a few exploratory runs of the same
kind (d in 256-1024, h in 64-256, centres 4-8 apart), which are not recorded here.

Everything is seeded (data seed = training seed = k-means seed = the run's seed) and torch
runs on one thread, so the numbers repeat on the same machine; `seconds` is wall time and
depends on the load.

    python scripts/synthetic_pilot.py [--out figures/experiments/synthetic_pilot.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from nbutils.runs import save_json
from nbutils.synthetic import (
    input_nc1,
    input_recovery,
    make_mixture,
    run_summary_row,
    torch_threads,
    train_synthetic,
)

SEPARATIONS = (0.0, 4.0, 8.0)
SEEDS = (0, 1)
BASE_TRAINING = {"epochs": 100, "weight_decay": 5e-4, "batch_size": 128, "n_init": 10,
                 "feature_norm": "l2", "checkpoints": [0, 1, 2, 5, 10, 20, 50, 100]}
NARROW = {"n_per_cluster": 250, "num_coarse": 4, "dim": 32}
WIDE = {"n_per_cluster": 250, "num_coarse": 4, "dim": 512}
# name: (what it tries, mixture, training beyond BASE_TRAINING)
CANDIDATES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "previous": ("the former default", {**NARROW, "coarse_separation": 8.0},
                 {"hidden": 256, "lr": 0.05}),
    "closer_centres": ("class centres 2.5 noise-std apart: input NC1 near 1, classes overlap",
                       {**NARROW, "coarse_separation": 2.5}, {"hidden": 256, "lr": 0.05}),
    "opposite_clusters": ("centres 1 noise-std apart, the fine clusters on opposite sides: "
                          "not linearly separable", {**NARROW, "coarse_separation": 1.0},
                          {"hidden": 256, "lr": 0.05}),
    "wide_input": ("d=512 (500 noise dimensions), h=64, centres 8 apart",
                   {**WIDE, "coarse_separation": 8.0}, {"hidden": 64, "lr": 0.05}),
    "wide_input_closer": ("d=512, h=64, centres 4 apart", {**WIDE, "coarse_separation": 4.0},
                          {"hidden": 64, "lr": 0.05}),
    "wide_input_closer_slow": ("d=512, h=64, centres 4 apart, lr 0.01",
                               {**WIDE, "coarse_separation": 4.0}, {"hidden": 64, "lr": 0.01}),
}
CRITERIA = {"nc1_init_min": 1.0, "nc1_fall_min": 10.0, "terminal_phase": "reached in every run",
            "rule": "among candidates meeting every criterion in every run, the latest mean "
                    "terminal-phase onset"}


def pilot_run(mixture: dict[str, Any], training: dict[str, Any], separation: float,
              seed: int) -> dict[str, Any]:
    """One seeded training of a candidate: its run_summary_row and the wall time it took."""
    t0 = time.perf_counter()
    data = make_mixture(separation, seed=seed, **mixture)
    run = {"separation": separation, "seed": seed,
           "input_recovery": input_recovery(data, training["n_init"], seed,
                                            training["feature_norm"]),
           "input_nc1_coarse": input_nc1(data), **train_synthetic(data, seed=seed, **training)}
    return {**run_summary_row(run), "seconds": round(time.perf_counter() - t0, 1)}


def judge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A candidate's worst case over its runs against CRITERIA, and its mean onset and cost."""
    onsets = [r["tpt_epoch"] for r in rows if r["reached_terminal_phase"]]
    out = {"nc1_init_min": min(r["nc1_coarse_init"] for r in rows),
           "nc1_fall_min": min(r["nc1_coarse_fall"] for r in rows),
           "terminal_phase_reached": f"{len(onsets)}/{len(rows)}",
           "tpt_epoch_mean": float(np.mean(onsets)) if onsets else None,
           "final_coarse_train_acc_min": min(r["final_coarse_train_acc"] for r in rows),
           "seconds_per_run": float(np.mean([r["seconds"] for r in rows]))}
    out["meets"] = bool(out["nc1_init_min"] >= CRITERIA["nc1_init_min"]
                        and out["nc1_fall_min"] >= CRITERIA["nc1_fall_min"]
                        and len(onsets) == len(rows))
    return out


def choose(verdicts: dict[str, dict[str, Any]]) -> str | None:
    """The candidate CRITERIA's rule picks, or None when none meets every criterion."""
    ok = {name: v["tpt_epoch_mean"] for name, v in verdicts.items() if v["meets"]}
    return max(ok, key=ok.get) if ok else None


def main() -> None:
    """Train every candidate, judge it and write the pilot's JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="figures/experiments/synthetic_pilot.json")
    args = parser.parse_args()
    candidates, runs = {}, []
    for name, (what, mixture, extra) in CANDIDATES.items():
        training = {**BASE_TRAINING, **extra}
        with torch_threads(1):
            rows = [{"candidate": name, **pilot_run(mixture, training, s, seed)}
                    for s in SEPARATIONS for seed in SEEDS]
        candidates[name] = {"what": what, "mixture": mixture, "training": training,
                            **judge(rows)}
        runs += rows
        print(name, {k: candidates[name][k] for k in ("nc1_init_min", "nc1_fall_min",
                                                      "terminal_phase_reached",
                                                      "tpt_epoch_mean", "meets")}, flush=True)
    chosen = choose(candidates)
    save_json(Path(args.out), {"separations": list(SEPARATIONS), "seeds": list(SEEDS),
                               "criteria": CRITERIA, "chosen": chosen,
                               "candidates": candidates, "runs": runs})
    print("chosen:", chosen)


if __name__ == "__main__":
    main()
