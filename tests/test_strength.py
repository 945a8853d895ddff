"""Collapse strength (nbutils.strength): budgets, checkpoints, cells and paired differences, on
hand-made records whose answers are computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from nbutils import records, strength
from nbutils.config import PROFILES, default_checkpoints, phase_checkpoints, resolve
from nbutils.data import coarse_mapping
from nbutils.plots import (
    difference_frame,
    onset_frame,
    strength_figures,
    strength_frame,
    strength_pairs_frame,
)
from nbutils.runs import ArtifactError, save_json, save_npz
from nbutils.summaries import pair_names

# t(0.975, 2 dof), for intervals over 3 seeds.
T2 = 4.302652729911275
T1 = 12.706204736174705


def test_phase_checkpoints_reproduce_the_full_profile_and_stay_within_five_percent() -> None:
    assert phase_checkpoints(40) == PROFILES["full"]["checkpoint_epochs"]
    for epochs in (1, 2, 20, 30, 50, 80, 120):
        marks = phase_checkpoints(epochs)
        late = [e for e in marks if 3 * e >= epochs]
        assert marks[:2] == [0, 1] and marks[-1] == epochs
        gaps = [b - a for a, b in zip(late, late[1:], strict=False)]
        assert max(gaps, default=1) <= max(1, 0.05 * epochs)
    assert phase_checkpoints(80) == [0, 1, 8, 16, 24, *range(28, 81, 4)]


def test_a_new_budget_of_profile_full_gets_its_rule_and_other_profiles_the_default() -> None:
    assert resolve("full", epochs=80).checkpoint_epochs == phase_checkpoints(80)
    assert resolve("cpu", epochs=10).checkpoint_epochs == default_checkpoints(10)
    assert resolve("full", epochs=80, checkpoint_epochs=[0, 80]).checkpoint_epochs == [0, 80]


def test_points_give_each_weight_decay_its_budget_seed_by_seed() -> None:
    # Papermill passes a dict's keys as strings.
    budgets = {"0.005": 80, "0.0005": 40}
    assert strength.points([5e-3, 5e-4], [0, 1], budgets) == [
        {"lr": 0.1, "weight_decay": 5e-3, "seed": 0, "epochs": 80},
        {"lr": 0.1, "weight_decay": 5e-4, "seed": 0, "epochs": 40},
        {"lr": 0.1, "weight_decay": 5e-3, "seed": 1, "epochs": 80},
        {"lr": 0.1, "weight_decay": 5e-4, "seed": 1, "epochs": 40}]
    with pytest.raises(ValueError, match="no budget for weight decay 5e-05"):
        strength.points([5e-5], [0], budgets)



def test_points_give_a_weight_decay_its_own_lr_drops_and_refuse_unknown_cells() -> None:
    budgets = {5e-3: 80, 5e-4: 40}
    drops = {"0.005": [0.15, 0.3]}  # papermill passes a dict's keys as strings
    pts = strength.points([5e-3, 5e-4], [0], budgets, milestones_by_weight_decay=drops)
    assert pts == [
        {"lr": 0.1, "weight_decay": 5e-3, "seed": 0, "epochs": 80,
         "step_milestones": [0.15, 0.3]},
        {"lr": 0.1, "weight_decay": 5e-4, "seed": 0, "epochs": 40}]
    with pytest.raises(ValueError, match=r"milestones_by_weight_decay: weight decays \[5e-05\]"):
        strength.points([5e-3], [0], budgets, milestones_by_weight_decay={5e-5: [0.5]})

def record(tmp: Path, wd: float, seed: int, epochs: int, onset: int, a_at: float,
           a_end: float) -> dict:
    """A results.json-shaped run: clean train curve with `onset`, history at 0, onset and end."""
    cfg = resolve("full", weight_decay=wd, seed=seed, epochs=epochs, train_baseline=False,
                  run_dir=str(tmp / f"wd{wd}_seed{seed}")).to_dict()

    def entry(epoch: int, a: float) -> dict:
        """One history entry; the other measures follow (a) so each has a known answer."""
        return {"epoch": epoch, "coarse_train_acc": 1.0 if epoch >= onset else 0.5,
                "recovery": {"test_acc_true_coarse": a, "train_cluster_acc": a + 0.05,
                             "test_cluster_acc_true_coarse": a - 0.1},
                "nc": {"coarse": {"nc1": wd * 10 * (1 - a)},
                       "fine_structure": {"fine_variance_fraction_mean": a / 2}}}

    history = [entry(0, 0.6), entry(onset, a_at), entry(epochs, a_end)]
    curve = [e for e in phase_checkpoints(epochs) if e > 0]
    return {**history[-1], "config": cfg, "history": history,
            "controls": {"random_init": {"test_acc_true_coarse": 0.62}},
            "clean_train": {"coarse": {"epochs": curve,
                                       "accs": [1.0 if e >= onset else 0.9 for e in curve]}}}


@pytest.fixture
def results(tmp_path: Path) -> list[dict]:
    """wd 5e-3 (80 epochs; seed 2 holds the phase over 40% only) and wd 5e-4 (40 epochs)."""
    return [record(tmp_path, 5e-3, 0, 80, 24, 0.84, 0.80),
            record(tmp_path, 5e-3, 1, 80, 24, 0.86, 0.84),
            record(tmp_path, 5e-3, 2, 80, 48, 0.83, 0.82),
            record(tmp_path, 5e-4, 0, 40, 16, 0.91, 0.90),
            record(tmp_path, 5e-4, 1, 40, 16, 0.92, 0.91),
            record(tmp_path, 5e-4, 2, 40, 16, 0.96, 0.95)]


def test_a_cell_with_a_seed_short_of_the_hold_is_flagged_and_left_out_of_its_changes(
        results: list[dict]) -> None:
    out = strength.summarise(results, [5e-3, 5e-4])
    strong, weak = out["cells"]
    assert strong["held_fraction"] == [0.7, 0.7, 0.4] and not strong["holds_phase"]
    assert weak["held_fraction"] == [0.6, 0.6, 0.6] and weak["holds_phase"]
    change = strong["onset_to_end"]
    assert change["seeds"] == [0, 1] and change["left_out_seeds"] == [2]
    a = change["measures"]["recovery.test_acc_true_coarse"]
    assert a["change"] == pytest.approx([-0.04, -0.02]) and a["change_t95"] is not None
    end = weak["end"]["recovery.test_acc_true_coarse"]
    assert end["mean"] == pytest.approx(0.92)
    assert end["sd"] == pytest.approx(math.sqrt((0.02**2 + 0.01**2 + 0.03**2) / 2))
    assert weak["end"][strength.CONTROL]["mean"] == pytest.approx(0.62)
    assert [p["reached"] for p in out["phase"]] == [True, True, False, True, True, True]
    assert out["axes"] == [] and strong["axis_at_end"]["runs"] == 0


def test_differences_are_paired_by_seed_with_a_student_t_interval(results: list[dict]) -> None:
    out = strength.summarise(results, [5e-3, 5e-4])
    (diff,) = out["differences"]
    assert diff["weight_decays"] == [5e-3, 5e-4] and not diff["in_phase"]
    a = diff["measures"]["recovery.test_acc_true_coarse"]
    # 0.80 - 0.90, 0.84 - 0.91, 0.82 - 0.95: mean -0.10, sd 0.03.
    assert a["seeds"] == [0, 1, 2]
    assert a["difference"] == pytest.approx([-0.10, -0.07, -0.13])
    assert (a["spread"]["mean"], a["spread"]["sd"]) == pytest.approx((-0.10, 0.03))
    half = T2 * 0.03 / math.sqrt(3)
    assert a["t95"] == pytest.approx((-0.10 - half, -0.10 + half))
    assert "not independent" in out["pairing"]
    # A seed missing from one cell drops out of the pairs.
    one = strength.paired(results[:3], results[3:5], "recovery.test_acc_true_coarse")
    assert one["seeds"] == [0, 1] and one["t95"] is not None


def test_one_seed_gives_spreads_without_intervals(results: list[dict]) -> None:
    out = strength.summarise([results[0], results[3]], [5e-3, 5e-4])
    (diff,) = out["differences"]
    assert diff["measures"]["nc.coarse.nc1"]["t95"] is None
    assert math.isnan(out["cells"][0]["end"]["nc.coarse.nc1"]["sd"])
    with pytest.raises(ValueError, match=r"no run of weight decay\(s\) \[5e-05\]"):
        strength.summarise(results, [5e-3, 5e-5])


def test_the_test_clustering_axis_is_read_from_a_runs_phase_features(
        results: list[dict]) -> None:
    res = results[3]
    run = Path(res["config"]["run_dir"])
    save_json(run / "config.json", {"config": res["config"]})
    # Per super-class (mod5: fine k and k + 5), two tight test clusters far apart on the fine axis.
    rng = np.random.default_rng(0)
    fine = np.repeat(np.arange(10), 20)
    means = np.zeros((10, 8))
    means[np.arange(10), np.arange(10) % 8] = 1.0
    means[5:, 7] += 3.0
    feats = means[fine] + 0.01 * rng.standard_normal((len(fine), 8))
    arrays = {f"{name}_{e}": a for e in (16, 40) for name, a in
              (("test_features", feats.astype(np.float16)), ("test_pred", fine % 5),
               ("train_fine_means", means))}
    save_npz(run / "phase_features.npz", epochs=np.asarray([16, 40]), test_fine=fine,
             fine_to_coarse=np.arange(10) % 5, **arrays)
    out = strength.summarise(results, [5e-3, 5e-4])
    (axes,) = out["axes"]
    assert (axes["weight_decay"], axes["seed"], axes["end_epoch"]) == (5e-4, 0, 40)
    at_end = out["cells"][1]["axis_at_end"]
    assert at_end["runs"] == 1
    assert at_end["test_cluster_acc"]["mean"] == pytest.approx(1.0)
    assert at_end["fine_label.agreement"]["mean"] == pytest.approx(1.0)


def test_the_record_frames_and_figures(results: list[dict]) -> None:
    out = strength.summarise(results, [5e-3, 5e-4])
    rec = records.strength(out, results)
    assert [r["experiment"] for r in rec["runs"]] == ["strength"] * 6
    assert [r["epochs"] for r in rec["runs"]] == [80, 80, 80, 40, 40, 40]
    assert rec["pilot"] == "figures/full/wd_pilot.json"
    assert len(strength_frame(out)) == 2 and len(difference_frame(out)) == len(strength.KEYS)
    assert len(onset_frame(out)) == 2 * len(strength.KEYS)
    figures = strength_figures(out, strength.by_cell(results, [5e-3, 5e-4]))
    assert sorted(figures) == ["strength_changes", "strength_vs_nc1"]


def baseline_record(seed: int, tests: list[float], **config: object) -> dict:
    """A pairs.json of a published `full` seed whose baseline separates pair k at tests[k]."""
    cfg = resolve("full", seed=seed).to_dict() | config
    names = pair_names(coarse_mapping("mod5"))
    return {"seed": seed, "config": cfg,
            "pairs": [{"pair": n, "baseline": {"train": 1.0, "test": t}}
                      for n, t in zip(names, tests, strict=True)]}


def test_merged_pairs_are_set_against_the_shared_baseline_of_their_seed(
        tmp_path: Path, results: list[dict]) -> None:
    for res in results:
        end = res["recovery"]["test_acc_true_coarse"]
        res["recovery"]["per_superclass"] = [end + 0.01 * k for k in range(5)]
    published = tmp_path / "figures" / "full"
    save_json(published / "logs" / "pairs.json",
              baseline_record(0, [0.95 - 0.01 * k for k in range(5)]))
    save_json(published / "seeds" / "seed1" / "logs" / "pairs.json", baseline_record(1, [0.97] * 5))
    baselines = strength.baseline_pairs(published)
    assert sorted(baselines) == [0, 1]
    out = strength.summarise(results, [5e-3, 5e-4], baselines=baselines)["pair_counterfactual"]
    assert out["baseline"] == {"profile": "full", "weight_decay": 5e-4, "epochs": 40,
                               "seeds": [0, 1]}
    strong = out["cells"][0]
    # Seed 2 has no published baseline: seeds 0 and 1 only.
    assert strong["weight_decay"] == 5e-3 and strong["seeds"] == [0, 1]
    first = strong["pairs"][0]
    assert first["pair"] == "airplane/dog"
    # (0.80 - 0.95, 0.84 - 0.97): mean -0.14, sd 0.02 / sqrt(2).
    diff = first["merged_minus_baseline"]
    assert (diff["mean"], diff["sd"]) == pytest.approx((-0.14, 0.02 / math.sqrt(2)))
    assert diff["t95"] == pytest.approx((-0.14 - T1 * 0.01, -0.14 + T1 * 0.01))
    # Over the five pairs: merged 0.82 and 0.86, baselines 0.93 and 0.97.
    mean = strong["mean_over_pairs"]
    assert mean["merged_test"]["values"] == pytest.approx([0.82, 0.86])
    assert mean["merged_minus_baseline"]["values"] == pytest.approx([-0.11, -0.11])
    assert len(strength_pairs_frame(strength.summarise(
        results, [5e-3, 5e-4], baselines=baselines))) == 2 * 5
    with pytest.raises(ValueError, match="width is 32, the run's is 16"):
        strength.summarise(results, [5e-3], baselines={0: baseline_record(0, [0.9] * 5,
                                                                         width=32)})
    with pytest.raises(ArtifactError, match="baseline_pairs_from: no pairs.json"):
        strength.baseline_pairs(tmp_path / "nothing")


def test_published_seeds_stand_for_their_cells_points_when_their_training_is_the_same(
        tmp_path: Path) -> None:
    published = tmp_path / "figures" / "full"
    for seed, folder in ((0, published / "logs"), (1, published / "seeds" / "seed1" / "logs")):
        res = record(tmp_path, 5e-4, seed, 40, 16, 0.91, 0.90)
        # Published with its baseline, which does not change the coarse model.
        res["config"] |= {"train_baseline": True, "run_dir": f"runs/full/seed{seed}"}
        save_json(folder / "results.json", res)
    points = strength.points([5e-3, 5e-4], [0, 1, 2], {5e-3: 80, 5e-4: 40})
    reused, todo = strength.reuse_published(points, {5e-4: str(published)}, "full",
                                            tmp_path / "runs", train_baseline=False)
    assert [r["config"]["run_dir"] for r in reused] == [
        str(published / "logs"), str(published / "seeds" / "seed1" / "logs")]
    assert [(p["weight_decay"], p["seed"]) for p in todo] == [
        (5e-3, 0), (5e-3, 1), (5e-3, 2), (5e-4, 2)]
    none, every = strength.reuse_published(points, {}, "full", tmp_path / "runs")
    assert none == [] and every == points
    with pytest.raises(ValueError, match=r"published\[0.0005\]: seed 0 .* has epochs=40, the "
                                         r"cell's point 30"):
        strength.reuse_published(strength.points([5e-4], [0], {5e-4: 30}),
                                 {5e-4: str(published)}, "full", tmp_path / "runs")
    with pytest.raises(ValueError, match=r"published: weight decays \[5e-05\] are not cells"):
        strength.reuse_published(points, {5e-5: str(published)}, "full", tmp_path / "runs")
    with pytest.raises(ArtifactError, match="published: no results.json"):
        strength.published_runs(tmp_path / "nothing")
