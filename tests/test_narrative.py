"""The 'What we see' generator on the committed runs, on older results and on fabricated runs."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_experiments import fake_result

from nbutils import experiments as ex
from nbutils import narrative
from nbutils.your_features import analyze_features

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("end to end", "0.98 of", "gap", "reproduces")


def committed(profile: str) -> dict[str, Any]:
    """figures/<profile>/results.json."""
    return json.loads((REPO / "figures" / profile / "results.json").read_text())


def history(accs: list[float], epochs: list[int]) -> list[dict[str, Any]]:
    """History entries with the given clean coarse train accuracies and simple NC values."""
    return [{"epoch": e, "coarse_train_acc": a,
             "nc": {"coarse": {"nc1": 10.0 / (1 + e)}, "fine": {"nc1": 20.0 / (1 + e)},
                    "fine_structure": {"fine_variance_fraction_mean": 0.1 + e / 1000,
                                       "nc1_within_superclass_mean": 1.0 / (1 + e)}}}
            for e, a in zip(epochs, accs, strict=True)]


def fabricated(reached: bool) -> dict[str, Any]:
    """A minimal run of 100 epochs that did or did not hold >= 99.5% over the last 30%."""
    accs = [0.2, 0.9, 0.996, 0.999, 1.0] if reached else [0.2, 0.9, 0.98, 0.99, 0.997]
    return {
        "profile": "paper", "mapping": "mod5", "width": 64, "epochs": 100, "seed": 0,
        "device": "a GPU", "coarse": {"train_acc": accs[-1], "test_acc": 0.95},
        "baseline": {"train_acc": 1.0, "test_acc": 0.95},
        "recovery": {"train_cluster_acc": 0.97, "test_acc_true_coarse": 0.96,
                     "test_acc_pred_coarse": 0.925, "nmi": 0.96, "ari": 0.95,
                     "linear_probe_test_acc": 0.92,
                     "per_superclass": [0.9, 0.99, 0.95, 0.96, 0.97]},
        "controls": {"random_init": {"test_acc_true_coarse": 0.6},
                     "raw_pixels": {"test_acc_true_coarse": 0.64}},
        "nc": {"coarse": {"nc1": 0.05, "nc4": 0.001}, "fine": {"nc1": 0.2}},
        "history": history(accs, [0, 25, 60, 80, 100]),
    }


@pytest.mark.parametrize("profile", ["cpu", "paper"])
def test_committed_runs(profile: str) -> None:
    res = committed(profile)
    seeds_file = REPO / "figures" / profile / "seeds.json"
    seeds = json.loads(seeds_file.read_text()) if seeds_file.is_file() else None
    text = narrative.run_summary(res, seeds)
    rec = res["recovery"]
    for value in (rec["train_cluster_acc"], rec["test_acc_true_coarse"],
                  rec["test_acc_pred_coarse"], res["baseline"]["test_acc"]):
        assert narrative.pct(value) in text
    assert f"width {res['width']}" in text and f"{res['epochs']} epochs" in text
    assert "one training run, seed 0" in text
    # Neither committed run holds >= 99.5% clean train accuracy over the last 30% of training.
    assert "before convergence" in text and "in the terminal phase (" not in text
    assert not any(word in text.lower() for word in FORBIDDEN)
    assert text == narrative.profile_summary(REPO / "figures", profile)


def flat(text: str) -> str:
    """The text with its line wrapping undone."""
    return " ".join(text.split())


def test_committed_numbers_read_as_in_the_table() -> None:
    cpu = flat(narrative.run_summary(committed("cpu")))
    paper = flat(narrative.run_summary(committed("paper")))
    assert "ends at 95.2% at epoch 30, below the 99.5%" in cpu
    assert "88.9% (95% CI 88.2–89.5%) within the super-class the network predicts (b)" in cpu
    assert "only from epoch 66 on (98.6% at epoch 50; 100.0% at epoch 66)" in paper
    assert "is 1.4 points below the paper's 93%" in paper
    assert "from 93.2% (bird/horse) to 99.8% (deer/truck)" in paper


def test_terminal_phase_reached() -> None:
    res = fabricated(reached=True)
    text = narrative.training(res)
    assert "at or above 99.5% at every checkpoint from epoch 60 on (40% of training" in text
    assert "so the run is in the terminal phase" in text
    assert "before convergence" not in narrative.run_summary(res)
    assert "in the terminal phase." in narrative.collapse(res)


def test_terminal_phase_not_reached() -> None:
    res = fabricated(reached=False)
    text = narrative.training(res)
    assert "only from epoch 100 on (99.0% at epoch 80; 99.7% at epoch 100)" in text
    assert "covers 0% of training by checkpoints, less than the 30%" in text
    assert "before convergence" in text
    assert "before convergence" in narrative.collapse(res)
    assert "The run is before convergence" in narrative.recovery(res)


def test_no_history_counts_as_before_convergence() -> None:
    res = fabricated(reached=True)
    del res["history"]
    text = narrative.run_summary(res)
    assert "records no per-checkpoint history" in text and "before convergence" in text


def test_missing_keys_are_left_out() -> None:
    res = copy.deepcopy(committed("cpu"))
    for key in ("config", "train_size", "amp"):
        res.pop(key)
    res["baseline"], res["controls"] = None, {}
    res["recovery"].pop("linear_probe_test_acc")
    res["recovery"].pop("per_superclass_train")
    for key in ("test_cluster_acc_true_coarse", "test_cluster_acc_pred_coarse",
                "nmi_within_superclass"):
        res["recovery"].pop(key)
    for section in ("coarse", "recovery"):
        res[section].pop("ci95", None)
    text = narrative.run_summary(res)
    for absent in ("(c)", "(d)", "95% CI", "baseline", "NMI within", "linear probe", "schedule",
                   "randomly initialised", "Train clustering accuracy per super-class"):
        assert absent not in text, absent
    assert "Test accuracy (a) per super-class ranges" in text


@pytest.mark.parametrize(("amp", "said"), [("bfloat16", "bf16 autocast"), ("off", "float32")])
def test_the_recipe_names_the_precision_the_run_trained_in(amp: str, said: str) -> None:
    res = {**committed("cpu"), "amp": amp}
    text = narrative.training(res)
    assert f"batch 128, {said}." in text and "off autocast" not in text


def test_intervals_quoted_and_no_gap_inside_them() -> None:
    res = fabricated(reached=True)
    res["recovery"]["ci95"] = {"test_acc_pred_coarse": [0.918, 0.932],
                               "test_acc_true_coarse": [0.956, 0.964]}
    text = flat(narrative.recovery(res))
    assert "92.5% (95% CI 91.8–93.2%) within the super-class the network predicts" in text
    assert "96.0% (95% CI 95.6–96.4%) within each image's true super-class" in text
    assert ("0.5 points below the paper's 93%, which lies inside the 95% interval of (b): the two "
            "do not differ beyond test-set sampling") in text
    assert "2.5 points below the 10-label baseline's 95.0%, outside the 95% interval of (b)" in text
    assert "percentile-bootstrap intervals over the evaluated images" in text
    assert "No bootstrap interval" not in text and "gap" not in text


def test_paper_number_outside_the_interval() -> None:
    res = fabricated(reached=True)
    res["recovery"]["ci95"] = {"test_acc_pred_coarse": [0.91, 0.92],
                               "train_cluster_acc": [0.965, 0.975]}
    res["recovery"]["test_acc_pred_coarse"] = 0.915
    text = flat(narrative.recovery(res))
    assert "1.5 points below the paper's 93%, outside the 95% interval of (b)" in text
    assert "the right fine label for 97.0% (95% CI 96.5–97.5%) of them" in text


def test_baseline_with_its_own_interval() -> None:
    res = fabricated(reached=True)
    res["recovery"]["ci95"] = {"test_acc_pred_coarse": [0.918, 0.932]}
    res["baseline"]["ci95"] = {"test_acc": [0.93, 0.96]}
    text = flat(narrative.recovery(res))
    assert ("2.5 points below the 10-label baseline's 95.0%, but their 95% intervals overlap: "
            "these test images do not resolve it") in text
    res["baseline"]["ci95"] = {"test_acc": [0.94, 0.96]}
    text = flat(narrative.recovery(res))
    assert "baseline's 95.0%, and their 95% intervals do not overlap (ratio" in text
    assert "95.0% (95% CI 94.0–96.0%) test accuracy" in flat(narrative.training(res))


def test_no_interval_says_so() -> None:
    text = narrative.recovery(fabricated(reached=True))
    assert "No bootstrap interval is recorded for this run" in flat(text)


def test_test_fitted_variants_and_within_nmi() -> None:
    res = fabricated(reached=True)
    res["recovery"].update(test_cluster_acc_true_coarse=0.97, test_cluster_acc_pred_coarse=0.93,
                           nmi_within_superclass=0.81,
                           ci95={"test_cluster_acc_pred_coarse": [0.925, 0.935]})
    text = flat(narrative.recovery(res))
    assert ("k-means fitted on the test features of each super-class gives 97.0% inside the true "
            "super-class (c) and 93.0% (95% CI 92.5–93.5%) inside the predicted super-class (d)"
            ) in text
    assert "NMI within super-classes 0.810" in text


def test_seeds_are_quoted_with_their_count() -> None:
    res = fabricated(reached=True)
    seeds = {"seeds": [0, 1, 2], "summary": {
        "recovery.test_acc_pred_coarse": {"mean": 0.921, "sd": 0.004, "n": 3},
        "baseline.test_acc": {"mean": 0.95, "sd": 0.002, "n": 3}}}
    text = flat(narrative.recovery(res, seeds))
    assert ("Over 3 training seeds (0, 1, 2), (b) is 92.1% ± 0.4 points and the 10-label baseline "
            "95.0% ± 0.2 points (mean ± sample sd, ddof=1).") in text
    assert "one training run" not in text and "fewer than the 3 seeds" not in text
    two = {"seeds": [0, 1], "summary": {
        "recovery.test_acc_pred_coarse": {"mean": 0.921, "sd": 0.004, "n": 2}}}
    assert "fewer than the 3 seeds the protocol asks for" in flat(narrative.recovery(res, two))
    one = {"seeds": [0], "summary": {
        "recovery.test_acc_pred_coarse": {"mean": 0.921, "sd": None, "n": 1}}}
    assert "one training run, seed 0" in flat(narrative.recovery(res, one))
    assert "quotes headline numbers and differences only over at least 3 seeds" in \
        flat(narrative.recovery(res))


def test_superclass_names() -> None:
    res = {"mapping": "mod5", "dataset": "cifar10"}
    assert narrative.superclass_names(res) == [
        "airplane/dog", "automobile/frog", "bird/horse", "cat/ship", "deer/truck"]
    assert narrative.superclass_names({"mapping": "cifar100", "dataset": "cifar100"}) is None


def test_update_docs(tmp_path: Path) -> None:
    figures = tmp_path / "figures"
    (figures / "x").mkdir(parents=True)
    res = fabricated(reached=True)
    (figures / "x" / "results.json").write_text(json.dumps(res))
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n\n<!-- summary:x:start -->\nold\n<!-- summary:x:end -->\n\nend\n")
    assert narrative.update_docs(doc, figures) is True
    expected = narrative.run_summary(res)
    assert doc.read_text() == (f"intro\n\n<!-- summary:x:start -->\n{expected}\n"
                               f"<!-- summary:x:end -->\n\nend\n")
    assert narrative.update_docs(doc, figures) is False
    seeds = {"seeds": [0, 1, 2], "summary": {
        "recovery.test_acc_pred_coarse": {"mean": 0.921, "sd": 0.004, "n": 3}}}
    (figures / "x" / "seeds.json").write_text(json.dumps(seeds))
    assert narrative.update_docs(doc, figures) is True
    assert "Over 3 training seeds" in doc.read_text()


def test_update_docs_needs_markers(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("no markers\n")
    with pytest.raises(ValueError, match="has no <!-- summary:<profile>:start/end --> markers"):
        narrative.update_docs(doc, tmp_path)


def test_dynamics_text_calls_a_change_only_from_three_seeds_and_its_interval() -> None:
    # Coarse NC1 falls identically in every seed (1/11 -> 1/16); recovery (a) moves by
    # +0, +1, +2 points: mean +1, sd 1, t(0.975, 2) * 1 / sqrt(3) = 2.48 > 1, so unresolved.
    runs = [fake_result(seed=s, rec=(0.5, 0.7, 0.8, 0.8 + 0.01 * s)) for s in range(3)]
    summary = ex.dynamics_summary(runs)
    text = " ".join(narrative.dynamics(summary, ex.terminal_changes(summary)).split())
    assert "reached by 3 of 3 seeds" in text
    assert "**coarse NC1**: 0.0909 → 0.0625" in text and "it falls." in text
    assert "[-1.5, +3.5] points: the interval includes zero" in text
    two = ex.dynamics_summary(runs[:2])
    assert "too few to call a change" in narrative.dynamics(two, ex.terminal_changes(two))
    late = ex.dynamics_summary([fake_result(train_acc=(0.1, 0.2, 0.3, 0.999))])
    assert narrative.dynamics(late, {}).endswith("says nothing about the terminal phase.")


def test_your_features_text_sets_each_number_beside_its_chance() -> None:
    # Two super-classes of two fine classes each, every fine class 8 units from its partner:
    # k-means recovers them exactly, against a chance level of 1/2.
    rng = np.random.default_rng(0)
    fine = np.repeat(np.arange(4), 40)
    x = rng.normal(size=(160, 4))
    x[:, 0] += 20 * (fine // 2)
    x[:, 1] += 8 * (fine % 2)
    result = analyze_features(x, fine, x, fine, np.array([0, 0, 1, 1]), n_init=2, seed=0,
                              feature_norm="none")
    text = " ".join(narrative.your_features(result).split())
    assert "(4 fine classes in 2 super-classes)" in text
    assert ("Test recovery (a), inside the true super-class, is 100.0%, 50.0 points above its "
            "chance level of 50.0%.") in text
    assert "(b)" not in text


def test_update_experiments_docs_rewrites_only_the_dynamics_section(tmp_path: Path) -> None:
    runs = [fake_result(seed=s) for s in range(3)]
    summary = ex.dynamics_summary(runs)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "dynamics.json").write_text(json.dumps(
        {"summary": summary, "terminal_changes": ex.terminal_changes(summary)}))
    doc = tmp_path / "experiments.md"
    doc.write_text("# E\n\n<!-- dynamics:start -->\nold\n<!-- dynamics:end -->\n\nkept\n")
    assert narrative.update_experiments_docs(doc, tmp_path)
    text = doc.read_text()
    assert "old" not in text and text.endswith("\n\nkept\n") and "3 of 3 seeds" in text
    assert not narrative.update_experiments_docs(doc, tmp_path)
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    assert not narrative.update_experiments_docs(bare, tmp_path)


def hierarchy_data() -> dict[str, Any]:
    """A hierarchies.json-shaped record: mod5 in 2 seeds, semantic in 1 that misses the phase."""
    from test_pairs import record

    from nbutils import pairs
    from nbutils.run_index import run_row

    runs = [fake_result(seed=0), fake_result(seed=1, rec=(0.5, 0.7, 0.8, 0.7)),
            fake_result(seed=0, mapping="semantic", train_acc=(0.2, 0.5, 0.9, 0.98))]
    recs = [record(0, f"m{i}", 0.5 + 0.1 * i, 0.6 + 0.05 * i) for i in range(4)]
    rows = pairs.pair_summary(recs)
    return {"setting": ex.run_setting(runs[0], 2),
            "runs": [run_row(r, "hierarchies") for r in runs],
            "pair_controls": {"split": "test", "rows": rows,
                              "correlations": pairs.correlations(rows, "test")}}


def test_hierarchies_states_the_phase_the_table_and_the_controls() -> None:
    text = narrative.hierarchies(hierarchy_data())
    flat = " ".join(text.split())
    assert "2 of 3 runs reach the terminal phase (onset at epoch 10); not: semantic seed 0" in flat
    # mod5: test (a) 0.9 and 0.7 over 2 seeds, sample sd sqrt(0.02) = 14.1 points.
    assert "| `mod5` | 2 | 100.0 ± 0.0% |" in text and "| 80.0 ± 14.1% |" in text
    assert "| `semantic` | 1 | 98.0% |" in text
    # Test (c) sits beside (b), which these records leave out: 0.7 and 0.5, same spread.
    assert "| 80.0 ± 14.1% | - | 60.0 ± 14.1% |" in text
    assert "from 50.0% (cat/dog in `m0`) to 80.0% (cat/dog in `m3`)" in flat
    assert "10-label baseline: Pearson r = 1.00, Spearman ρ = 1.00, slope 2.00 (4 points)" in flat
    assert "raw pixels: undefined (4 points)" in flat


def test_precision_names_one_precision_or_the_runs_of_the_rarer_ones() -> None:
    def label(r: dict[str, Any]) -> str:
        return f"seed {r['seed']}"

    same = [{"seed": s, "amp": "off"} for s in range(3)]
    assert narrative.precision(same, label) == "All 3 runs trained in float32 (`amp=auto`)."
    mixed = [{"seed": 0, "amp": "bfloat16"}, {"seed": 1, "amp": "off"},
             {"seed": 2, "amp": "bfloat16"}, {"seed": 3, "amp": math.nan}]
    assert narrative.precision(mixed, label) == (
        "Training precision followed each machine (`amp=auto`) and is mixed across runs: "
        "bf16 autocast in 2; float32 in 1 (seed 1); unrecorded precision in 1 (seed 3).")


def test_hierarchies_and_grid_say_how_the_runs_trained() -> None:
    data = hierarchy_data()
    data["runs"][2]["amp"] = "off"
    flat = " ".join(narrative.hierarchies(data).split())
    assert ("is mixed across runs: unrecorded precision in 2; float32 in 1 (semantic seed 0)."
            in flat)


def test_update_experiments_docs_rewrites_each_marked_section(tmp_path: Path) -> None:
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "hierarchies.json").write_text(json.dumps(hierarchy_data()))
    doc = tmp_path / "experiments.md"
    doc.write_text("a\n<!-- hierarchies:start -->\nold\n<!-- hierarchies:end -->\nb\n")
    assert narrative.update_experiments_docs(doc, tmp_path)
    text = doc.read_text()
    assert "old" not in text and text.startswith("a\n<!-- hierarchies:start -->\n")
    assert text.endswith("<!-- hierarchies:end -->\nb\n") and "2 of 3 runs" in text


def test_grid_states_the_phase_per_cell_and_the_chosen_test() -> None:
    from nbutils.run_index import run_row

    late = (0.2, 0.5, 0.9, 0.98)
    results = [fake_result(seed=s, lr=lr, wd=5e-4, train_acc=late if lr == 0.01 else
                           (0.2, 0.9, 1.0, 1.0)) for lr in (0.1, 0.01) for s in (0, 1)]
    grid = ex.grid_summary(results, [0.1, 0.01], [5e-4, 5e-5])
    chosen = [dict(fake_result(seed=s), baseline={"test_acc": 0.9},
                   ratio_to_baseline=0.9 / 0.9) for s in (0, 1)]
    data = {**grid, "best": ex.best_cell(grid, "recovery.test_acc_true_coarse"),
            "chosen_test": ex.summarise(chosen, "lr", ex.CHOSEN_KEYS),
            "runs": [run_row(r, "grid") for r in results]}
    text = narrative.grid(data)
    flat = " ".join(text.split())
    assert "evaluated on test. 1 of 2 cells have every seed in the terminal phase." in flat
    assert "| 0.1 | 90.0 ± 0.0% (2 of 2) | - (0 of 0) |" in text
    assert "| 0.01 | 90.0 ± 0.0% (0 of 2) | - (0 of 0) |" in text
    assert "is lr 0.1, weight decay 0.0005 (90.0% on validation)" in flat
    assert "(2 seeds)" in flat and "(b) / baseline 1.000 ± 0.000." in flat
    data["runs"] += [run_row(r, "grid-chosen") for r in results[:2]]
    flat = " ".join(narrative.grid(data).split())
    assert "Of its coarse models, 2 of 2 runs reach the terminal phase (onset at epoch 10)." in flat
    assert "The 4 runs' training precision was not recorded." in flat
    assert ("- lr 0.01, weight decay 0.0005: at or above 99.5% over the last 0%, 0% of training "
            "by seed (30% needed); final clean coarse train accuracy 98.0% (mean).") in text
    assert "lr 0.1, weight decay 0.0005: at" not in text
    data["best"]["all_in_terminal_phase"] = False
    assert "No cell has every seed in the terminal phase" in narrative.grid(data)


def test_split_says_the_test_halves_are_chance_and_reports_memorisation() -> None:
    from nbutils.stats import spread

    def final(v: float) -> dict[str, Any]:
        return {k: spread([v, v + 0.02]) for k in (
            *ex.SPLIT_KEYS, "own_train_acc", "head_half_acc_train", "head_half_acc_test",
            "class_test_acc")}

    summary = {"20-label": {"seeds": [0, 1], "reached_terminal_phase": [True, False],
                            **final(0.5)},
               "merged": {"label": "5-label mod5 model (real pairs merged)", "seeds": [0, 1],
                          "reached_terminal_phase": [True, True], **final(0.9)}}
    flat = " ".join(narrative.split({"setting": "profile tpt", "summary": summary}).split())
    assert "terminal phase on its own 20 labels in 1 of 2 seeds" in flat
    assert "chance by construction, 51.0 ± 1.4%" in flat
    assert "read as their classes, give a 10-class test accuracy of 51.0 ± 1.4%" in flat
    assert "the 5-label mod5 model (real pairs merged) (2 of 2 seeds in the terminal phase)" in flat
    assert "10-label model" not in flat


def test_synthetic_states_the_collapse_the_phase_and_the_table() -> None:
    from nbutils.stats import spread

    def run(seed: int, onset: int | None, init: float, fall: float) -> dict[str, Any]:
        return {"seed": seed, "reached_terminal_phase": onset is not None, "tpt_epoch": onset,
                "tpt_held_fraction": 0.9 if onset else None, "epochs": 100,
                "nc1_coarse_init": init, "nc1_coarse_fall": fall}

    row = {"separation": 8.0, "seeds": 2, "input_recovery": spread([1.0, 1.0]),
           "init_recovery_test": spread([0.8, 0.82]), "final_recovery_test": spread([0.99, 1.0]),
           "init_fine_variance_fraction": spread([0.02, 0.03]),
           "final_fine_variance_fraction": spread([0.3, 0.3]),
           "final_nc1_fine": spread([0.6, 0.6]), "nc1_coarse_fall": spread([30.0, 40.0])}
    data = {"setting": "synthetic: tiny", "by_separation": [row],
            "runs": [run(0, 5, 4.0, 30.0), run(1, None, 6.0, 40.0)]}
    flat = " ".join(narrative.synthetic(data).split())
    assert "1 of 2 runs reach the terminal phase" in flat
    assert "onsets at epochs 5 of 100, held for 90% of training" in flat
    # NC1 at init over both runs: mean 5, sample sd sqrt(2); the fall is the per-separation mean.
    assert "is 5.00 ± 1.4 at initialisation (sample sd over all 2 runs)" in flat
    assert "falls by a mean 35-fold by the end" in flat
    assert "| 8 | 100.0 ± 0.0% | 81.0 ± 1.4% | 99.5 ± 0.7% | 2.5% → 30.0% | 0.600 ± 0 |" in flat
