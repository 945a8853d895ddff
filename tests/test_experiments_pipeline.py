"""Integration: notebooks 06-10 and 12 through papermill with real CIFAR-10.

Tiny settings (1 epoch, 20 train images per class) and one shared run root, so notebooks 06-10
train a single `ci` pipeline run between them (plus the split's two small models, and 08's run
with the 10-label baseline that its pair controls need): about a minute. Notebook 12 trains one
tiny `full`-profile run per weight decay (1 and 2 epochs), with its phase features.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from nbutils.reproduce import NOTEBOOK_DIR, run_notebook

EXPERIMENTS = ("06_dynamics", "07_grid", "08_hierarchies", "09_split", "10_synthetic",
               "12_collapse_strength")
TINY = {"epochs": 1, "train_per_class": 20, "test_per_class": 10, "checkpoint_epochs": [0, 1],
        "n_init": 2, "train_baseline": False}
FIGURES = {
    "06_dynamics": ("dynamics_recovery", "dynamics_nc1_coarse", "dynamics_nc1_fine",
                    "dynamics_fine_separation", "cpu_dynamics_recovery"),
    "07_grid": ("grid_recovery", "grid_nc1"),
    "08_hierarchies": ("hierarchies_recovery", "hierarchies_separation", "hierarchies_pairs",
                       "hierarchies_pair_controls", "hierarchies_pair_vs_controls"),
    "09_split": ("split_recovery", "split_separation"),
    "10_synthetic": ("synthetic_recovery", "synthetic_nc1", "synthetic_recovery_over_training",
                     "synthetic_accuracy_over_training"),
    "12_collapse_strength": ("strength_vs_nc1", "strength_changes"),
}
pytestmark = pytest.mark.slow
RESULTS = {"06_dynamics": "dynamics.json", "07_grid": "grid.json",
           "08_hierarchies": "hierarchies.json", "09_split": "split.json",
           "10_synthetic": "synthetic.json", "12_collapse_strength": "strength.json"}
# Notebook 12 on profile `full` (its checkpoint rule, clean train accuracy, phase features),
# shrunk: each weight decay's budget is a point of the sweep, so not an override.
STRENGTH = {"profile": "full", "weight_decays": [5e-4, 5e-3], "seeds": [0],
            "epochs_by_weight_decay": {5e-4: 1, 5e-3: 2},
            "overrides": {"width": 8, "train_per_class": 20, "test_per_class": 10, "n_init": 2,
                          "train_baseline": False}, "published": {}}


HIER = "mapping=mod5_lr=0.1_weight_decay=0.0005_seed=0"


def parameters(name: str, root: Path, out: Path, data_root: Path) -> dict:
    """Tiny papermill parameters of one experiment notebook."""
    if name == "10_synthetic":
        return {"out_dir": str(out), "separations": [0.0, 8.0], "seeds": [0], "curves_at": [8.0],
                "mixture": {"n_per_cluster": 50, "num_coarse": 3, "dim": 16},
                "training": {"hidden": 32, "epochs": 5, "checkpoints": [0, 5], "n_init": 2}}
    params = {"profile": "ci", "runs_root": str(root), "data_root": str(data_root),
              "out_dir": str(out), "overrides": TINY}
    extra = {"06_dynamics": {"seeds": [0]},
             "07_grid": {"lrs": [0.1], "weight_decays": [5e-4], "seeds": [0], "test_seeds": [0],
                         "val_per_class": 20,
                         "runs_root": str(root / "grid"), "test_root": str(root),
                         "test_overrides": TINY},
             "08_hierarchies": {"mappings": {"mod5": [0]}, "runs_root": str(root / "hierarchies"),
                                "overrides": {**TINY, "train_baseline": True}},
             # 08's run (same images, width and protocol) stands in for the published baselines.
             "12_collapse_strength": {**STRENGTH, "runs_root": str(root / "strength"),
                                      "baseline_pairs_from": str(root / "hierarchies" / HIER)},
             "09_split": {"seeds": [0], "merged_root": str(root),
                          "models": ["20-label", "10-label"], "runs_root": str(root / "split")}}
    return {**params, **extra[name]}


@pytest.fixture(scope="module")
def executed(tmp_path_factory, cifar10_root: Path) -> Path:
    """Notebooks 06-10 executed in order; returns the folder of figures and results."""
    base = tmp_path_factory.mktemp("experiments")
    out = base / "figures"
    for name in EXPERIMENTS:
        run_notebook(NOTEBOOK_DIR / f"{name}.ipynb", base / f"{name}.ipynb",
                     parameters(name, base / "runs", out, cifar10_root))
    return out


def test_finished_sweep_points_are_archived_beside_the_results(executed: Path) -> None:
    archived = sorted(p.relative_to(executed / "runs").as_posix()
                      for p in (executed / "runs").rglob("*.json"))
    hier = "hierarchies/mapping=mod5_lr=0.1_weight_decay=0.0005_seed=0"
    grid = "grid/mapping=mod5_lr=0.1_weight_decay=0.0005_seed=0"
    chosen = "runs/mapping=mod5_lr=0.1_weight_decay=0.0005_seed=0"
    # 5e-3 keeps its own lr drops, which name its run.
    strength = [f"strength/mapping=mod5_lr=0.1_weight_decay={wd}_seed=0_epochs={e}/results.json"
                for wd, e in (("0.0005", "1"), ("0.005", "2_step_milestones=0.15-0.3"))]
    assert archived == sorted([f"{chosen}/results.json", f"{grid}/results.json",
                               f"{hier}/pairs.json", f"{hier}/results.json", *strength])
    # The strength runs keep their phase test features, and so does their archive.
    assert sorted(p.parent.name for p in (executed / "runs").rglob("phase_features.npz")) == [
        Path(f).parent.name for f in strength]
    hierarchies = json.loads((executed / "hierarchies.json").read_text())
    stored = json.loads((executed / "runs" / hier / "pairs.json").read_text())
    assert stored["config"]["run_dir"] == Path(hier).name
    assert len(stored["pairs"]) == len(hierarchies["pair_controls"]["rows"]) == 5


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_figure_is_a_nonempty_image(executed: Path, name: str) -> None:
    for fig in FIGURES[name]:
        with Image.open(executed / f"{fig}.png") as img:
            assert img.format == "PNG" and min(img.size) > 300, fig
            assert img.info.get("dpi", (0, 0))[0] >= 149, fig


def test_results_files_are_well_formed(executed: Path) -> None:
    res = {n: json.loads((executed / f).read_text()) for n, f in RESULTS.items()}
    dyn = res["06_dynamics"]["summary"]
    assert dyn["epochs"] == [0, 1] and dyn["seeds"] == [0] and "profile ci" in dyn["setting"]
    assert [r["experiment"] for r in res["06_dynamics"]["runs"]] == ["dynamics"]
    assert len(dyn["phase"]) == 1 and dyn["hold"] == 0.3
    assert res["06_dynamics"]["cpu"]["setting"].startswith("profile cpu")
    grid = res["07_grid"]
    assert grid["lrs"] == [0.1] and 0 <= grid["mean"]["recovery.test_acc_true_coarse"][0][0] <= 1
    assert grid["evaluated_on"].startswith("validation") and grid["best"]["lr"] == 0.1
    assert [r["experiment"] for r in grid["runs"]] == ["grid", "grid-chosen"]
    assert list(res["08_hierarchies"]["by_mapping"]) == ["mod5"]
    assert len(res["08_hierarchies"]["pairs"]) == 5
    controls = res["08_hierarchies"]["pair_controls"]
    assert controls["split"] == "test" and len(controls["rows"]) == 5
    assert all(r[s]["test"]["n"] == 1 for r in controls["rows"]
               for s in ("merged", "baseline", "random_init", "raw_pixels"))
    assert set(controls["correlations"]) == {"baseline", "random_init", "raw_pixels"}
    assert [r["experiment"] for r in res["08_hierarchies"]["runs"]] == ["hierarchies"]
    assert set(res["09_split"]["summary"]) == {"20-label", "10-label", "merged"}
    assert [r["experiment"] for r in res["09_split"]["runs"]] == ["split-20-label",
                                                                  "split-10-label"]
    syn = res["10_synthetic"]["by_separation"]
    assert [r["separation"] for r in syn] == [0.0, 8.0]
    syn_runs = res["10_synthetic"]["runs"]
    assert [(r["separation"], r["seed"]) for r in syn_runs] == [(0.0, 0), (8.0, 0)]
    assert all(isinstance(r["reached_terminal_phase"], bool) for r in syn_runs)
    assert res["10_synthetic"]["feature_norm"] == "l2"
    strength = res["12_collapse_strength"]
    assert [(c["weight_decay"], c["epochs"]) for c in strength["cells"]] == [(5e-4, 1), (5e-3, 2)]
    assert strength["setting"].startswith("profile full") and strength["hold"] == 0.5
    assert [r["experiment"] for r in strength["runs"]] == ["strength", "strength"]
    assert len(strength["differences"]) == 1 and len(strength["axes"]) == 2
    assert all(c["axis_at_end"]["runs"] == 1 for c in strength["cells"])
    pairs = strength["pair_counterfactual"]
    assert pairs["baseline"]["seeds"] == [0] and len(pairs["cells"]) == 2
    assert all(len(c["pairs"]) == 5 and c["mean_over_pairs"]["merged_minus_baseline"]["n"] == 1
               for c in pairs["cells"])


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_notebook_ends_with_its_results_file_filled_in(executed: Path, name: str) -> None:
    notebook = json.loads((executed.parent / f"{name}.ipynb").read_text())
    heading, last = notebook["cells"][-2:]
    assert "".join(heading["source"]).startswith("## What we see")
    shown = "".join(last["outputs"][0]["data"]["text/markdown"])
    data = json.loads((executed / RESULTS[name]).read_text())
    setting = data["setting"] if "setting" in data else data["summary"]["setting"]
    assert "{{" not in shown and shown.startswith(setting)
