"""Retrain `tpt` coarse models keeping their phase features; what does (c)'s 2-means split follow?

    python scripts/tpt_axis.py --seeds 0 1 2

For each seed: the `tpt` profile's coarse model, unchanged except that no baseline is trained,
the clean train accuracy is measured at every checkpoint and only the phase checkpoints' features
are extracted (`feature_epochs='phase'`), so that the test features at the terminal-phase onset
and at the end are kept with the train side of the variance shares (`phase_features.npz`). Run
directories are runs/tpt-axis/seed<N> (training resumes from last.pt); each finished seed is
analysed and its small records published to figures/tpt/axis/seed<N>. Then
`scripts/cluster_axis.py` writes figures/tpt/cluster_axis.json over every published seed.
About 10-15 minutes a seed on 2 AVX-512 cores, 45 on 2 AVX2 cores (float32).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from nbutils import stages
from nbutils.paths import FIGURES_DIR, REPO

OVERRIDES = {"feature_epochs": "phase", "clean_train_eval": True, "train_baseline": False}
PUBLISHED = FIGURES_DIR / "tpt" / "axis"


def run_seed(seed: int, data_root: str | None) -> None:
    """Train (or resume), analyse and publish one seed."""
    cfg = stages.configure("tpt", run_dir=str(REPO / "runs" / "tpt-axis" / f"seed{seed}"),
                           data_root=data_root, seed=seed, **OVERRIDES)
    stages.run(cfg)
    stages.publish(cfg, PUBLISHED / f"seed{seed}")


def main() -> None:
    """Every requested seed, then the cluster-axis reading over the published ones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    for seed in args.seeds:
        run_seed(seed, args.data_root)
    files = sorted(str(p) for p in PUBLISHED.glob("seed*/logs/phase_features.npz"))
    subprocess.run([sys.executable, str(REPO / "scripts" / "cluster_axis.py"),
                    "--out", str(FIGURES_DIR / "tpt" / "cluster_axis.json"), *files], check=True)


if __name__ == "__main__":
    main()
