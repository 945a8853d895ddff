"""What the dominant 2-means split of each super-class's test features follows.

For every published phase-features file (the terminal-phase onset and the end of a run), the
2-means split of the test features inside each true super-class (recovery variant (c)) is set
against the fine label, correct vs wrong coarse prediction, the feature norm and the confused
super-class, and the test variance along the train-fitted fine axis against the top principal
axis (`nbutils.cluster_axis`). Only test features are published, so every share is test-side.

    python scripts/cluster_axis.py --out figures/full/cluster_axis.json [phase_features.npz ...]

Without files: every published seed of the `full` profile that exists.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from nbutils.cluster_axis import over_seeds, phase_file_axes
from nbutils.paths import FIGURES_DIR, REPO
from nbutils.runs import save_json

NOTES = {
    "agreement": "2-class Hungarian accuracy of the 2-means split against a binary split: the "
                 "better of the 2 matchings, so >= 0.5 for any pair of splits",
    "chance": "agreement that an independent split with the same marginals reaches (0.5 when "
              "either split is balanced, more when both are lopsided)",
    "fine_label": "the two fine classes of the super-class",
    "correct_vs_wrong": "network's coarse prediction right vs wrong",
    "wrong_share_per_cluster": "share of wrongly predicted images in each 2-means cluster",
    "norm_above_median": "L2 norm of the un-normalised feature above vs at/below the "
                         "super-class median",
    "confusion": "wrongly predicted images only: predicted super-class = the most common wrong "
                 "one (confused_with) vs any other wrong one",
    "variance_share": "share of the super-class's test variance (normalised features) along the "
                      "fine axis (unit vector between the two normalised train fine-class "
                      "means) and along the top principal axis (the largest share of any "
                      "direction); cos_fine_top: |cosine| between the two axes. Test side only: "
                      "the train features are not published; train_variance_share: the same shares "
                      "on the train features, computed when the run wrote its phase file (files "
                      "written before that have the test side only)",
    "nearest_train_mean_acc": "(a)-like: each test image takes the nearer of its true "
                              "super-class's two normalised train fine-class means (not the "
                              "train k-means centroids of (a))",
    "test_cluster_acc": "(c): 2-means on the test features of each true super-class, matched "
                        "to the fine labels",
    "mean_over_superclasses": "unweighted mean, min and max over super-classes",
    "over_seeds": "over the runs (seeds), at each run's onset, at its end, and end - onset: mean, "
                  "sd (ddof=1), min, max and the Student-t 95% interval of the mean (n - 1 dof) "
                  "of (c), the (a)-like accuracy, every mean over super-classes, and each "
                  "candidate's agreement minus its independent level (<candidate>.above_chance)",
}


def published(profile: str = "full") -> list[Path]:
    """The profile's phase-features files that exist: seed 0, then figures/<p>/seeds/seed*."""
    root = FIGURES_DIR / profile
    seeds = sorted((root / "seeds").glob("seed*/logs/phase_features.npz"))
    return [p for p in [root / "logs" / "phase_features.npz", *seeds] if p.is_file()]


def summary_lines(run: dict[str, Any]) -> list[str]:
    """A few lines per epoch: accuracies, mean agreements against chance, variance shares."""
    lines = [f"{run['file']} (seed {run['seed']}, feature_norm {run['feature_norm']})"]
    for epoch, out in run["epochs"].items():
        role = {run["onset_epoch"]: "onset", run["end_epoch"]: "end"}.get(int(epoch), "")
        m = out["mean_over_superclasses"]
        lines.append(f"  epoch {epoch} {role}: (c) {out['test_cluster_acc']:.3f}, (a)-like "
                     f"{out['nearest_train_mean_acc']:.3f}")
        for key in ("fine_label", "correct_vs_wrong", "norm_above_median", "confusion"):
            if f"{key}.agreement" not in m:  # confusion: no super-class with 2 wrong images
                continue
            agree, chance = m[f"{key}.agreement"], m[f"{key}.chance"]
            lines.append(f"    {key:18s} agreement {agree['mean']:.3f} "
                         f"[{agree['min']:.3f}, {agree['max']:.3f}], chance {chance['mean']:.3f}")
        for side in ("variance_share", "train_variance_share"):
            if f"{side}.fine_axis" not in m:
                continue
            fine, top = m[f"{side}.fine_axis"], m[f"{side}.top_axis"]
            lines.append(f"    {side}: fine axis {fine['mean']:.3f} "
                         f"[{fine['min']:.3f}, {fine['max']:.3f}], top axis {top['mean']:.3f} "
                         f"[{top['min']:.3f}, {top['max']:.3f}]")
    return lines


def main() -> None:
    """Measure every given (or published) file, write the results JSON, print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    files = args.files or published()
    if not files:
        parser.error("no phase_features.npz given or published")
    runs = [{"file": os.path.relpath(Path(f).resolve(), REPO), **phase_file_axes(f)}
            for f in files]
    save_json(args.out, {"question": "what does the dominant 2-means split of a super-class's "
                                     "test features follow?",
                         "notes": NOTES, "runs": runs, "over_seeds": over_seeds(runs)})
    print("\n".join(line for run in runs for line in summary_lines(run)))


if __name__ == "__main__":
    main()
