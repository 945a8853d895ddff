"""results.json intervals, the README and run tables, and the recovery-variants figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from nbutils.__main__ import main
from nbutils.plots.charts import plot_recovery_variants
from nbutils.results import (
    CI95_METHOD,
    LATER_METRICS,
    PAPER_TEST_ACC,
    README_END,
    README_START,
    StaleSeeds,
    add_published_intervals,
    markdown_table,
    readme_table,
    with_intervals,
)
from nbutils.runs import save_json
from nbutils.seeds import summarise_seeds
from nbutils.stats import bootstrap_count_ci, t_interval

REPO = Path(__file__).resolve().parents[1]


def test_readme_table_matches_committed_results() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split(README_START, 1)[1].split(README_END, 1)[0]
    assert section.strip() == readme_table(REPO / "figures").strip(), (
        "README results table is stale: run `python -m nbutils readme`"
    )


PAPER = REPO / "figures" / "paper" / "results.json"
ADDED = ("ci95", "ci95_method", "not_recomputed")


def without_intervals(node: object) -> object:
    """A results record with every key the intervals added removed, at any depth."""
    if isinstance(node, dict):
        return {k: without_intervals(v) for k, v in node.items() if k not in ADDED}
    if isinstance(node, list):
        return [without_intervals(v) for v in node]
    return node


def paper_record() -> dict:
    """The published paper record as it was before the intervals."""
    return without_intervals(json.loads(PAPER.read_text()))


def test_intervals_come_from_the_counts() -> None:
    res = paper_record()
    out = with_intervals(res)
    assert res == paper_record(), "the input must not change"
    assert out["ci95_method"] == CI95_METHOD
    for block, key, n in (("coarse", "test_acc", 10_000), ("recovery", "train_cluster_acc", 50_000),
                          ("recovery", "test_acc_pred_coarse", 10_000)):
        k = round(res[block][key] * n)
        assert out[block]["ci95"][key] == list(bootstrap_count_ci(k, n, seed=0))
    assert out["recovery"]["ci95"]["test_acc_pred_coarse"] == [0.9101, 0.9209]
    assert set(out["recovery"]["ci95"]) == {"train_cluster_acc", "test_acc_true_coarse",
                                            "test_acc_pred_coarse", "linear_probe_test_acc"}
    assert set(out["controls"]["random_init"]["ci95"]) == {"test_acc_true_coarse"}
    for block in ("coarse", "baseline", "recovery"):
        low, high = out[block]["ci95"]["test_acc" if block != "recovery" else
                                       "test_acc_true_coarse"]
        assert low <= (out[block].get("test_acc") or out[block].get("test_acc_true_coarse")) <= high


def test_missing_values_get_no_interval() -> None:
    res = paper_record()
    res["baseline"] = None
    res["recovery"]["linear_probe_test_acc"] = None
    out = with_intervals(res)
    assert out["baseline"] is None
    assert "linear_probe_test_acc" not in out["recovery"]["ci95"]


def test_published_intervals_keep_everything_else(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    save_json(path, paper_record())
    before = path.read_text()
    res = add_published_intervals(path)
    after = json.loads(path.read_text())
    assert after == res
    # Same content and key order, byte for byte, once the added keys are taken out again.
    assert json.dumps(without_intervals(after), indent=2) + "\n" == before
    assert list(res["not_recomputed"]) == ["recovery.test_cluster_acc_true_coarse",
                                           "recovery.test_cluster_acc_pred_coarse",
                                           "recovery.nmi_within_superclass"]
    assert "epoch 66" in res["not_recomputed"]["recovery.nmi_within_superclass"]
    once = path.read_bytes()
    assert main(["intervals", str(path)]) == 0
    assert path.read_bytes() == once


def test_committed_paper_results_carry_their_intervals() -> None:
    assert PAPER.read_bytes() == (PAPER.parent / "logs" / "results.json").read_bytes()
    published = json.loads(PAPER.read_text())
    # Recomputing the intervals from the published accuracies changes nothing.
    assert with_intervals(published) == published
    assert set(published["not_recomputed"]) == {f"recovery.{k}" for k in LATER_METRICS}


def cpu_runs() -> list[dict]:
    """Three fabricated cpu-profile records, seeds 0-2, differing in (b) and the raw control."""
    runs = []
    for seed, (pred, raw) in enumerate(((0.8877, 0.6433), (0.8901, 0.6433), (0.8853, 0.64))):
        res = paper_record()
        res.update(profile="cpu", width=16, epochs=30, seed=seed, device="cpu")
        res["recovery"]["test_acc_pred_coarse"] = pred
        res["controls"]["raw_pixels"]["test_acc_true_coarse"] = raw
        runs.append(with_intervals(res))
    return runs


def publish_figures(root: Path, seeds: bool) -> Path:
    """A figures/ folder with the paper record and a cpu record (and its seeds.json)."""
    runs = cpu_runs()
    for profile, res in (("paper", json.loads(PAPER.read_text())), ("cpu", runs[0])):
        save_json(root / profile / "results.json", res)
    if seeds:
        save_json(root / "cpu" / "seeds.json", summarise_seeds(runs))
    return root


def test_readme_table_variants_intervals_and_footnotes(tmp_path: Path) -> None:
    table = readme_table(publish_figures(tmp_path, seeds=False))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()}
    for variant in "abcd":
        assert any(f"({variant})" in label for label in rows), variant
    b_row = rows["**recovered 10-way test (b): train centroids, predicted coarse**"]
    assert "| 88.8% [" in b_row and "| 91.6% [91.0, 92.1] | 93% |" in b_row
    assert rows["recovered 10-way test (c): test clustered within true coarse"].endswith(
        "| - |  |")
    assert "`cpu`: w=16, 30 epochs, cpu" in table
    assert f"[..] beside a single run: 95% interval, {CI95_METHOD}." in table
    assert "Training wall time: the sum of the epoch times of both models" in table
    assert ("`paper`: - where a value was not recomputed: `recovery.test_cluster_acc_true_coarse`, "
            "`recovery.test_cluster_acc_pred_coarse`, `recovery.nmi_within_superclass`. Each was "
            "added to the analysis after this run") in table
    assert "Source: `figures/cpu/results.json`, `figures/paper/results.json`;" in table


def test_readme_table_with_seeds(tmp_path: Path) -> None:
    table = readme_table(publish_figures(tmp_path, seeds=True))
    assert "`cpu`: w=16, 30 epochs, 3 seeds, mean ± sd" in table
    b_row = next(line for line in table.splitlines() if "(b): train centroids" in line)
    # Mean 0.8877 and sd 0.0024 over seeds; the interval is the t interval over the 3 seeds.
    values = [r["recovery"]["test_acc_pred_coarse"] for r in cpu_runs()]
    low, high = t_interval(values)
    assert f"| 88.8% ± 0.2 [{100 * low:.1f}, {100 * high:.1f}] |" in b_row
    assert "mean ± sample standard deviation (ddof=1" in table
    assert "Student-t 95% interval of the mean over those seeds" in table
    assert "The wall time is the seed-0 run's alone" in table
    assert "`figures/cpu/seeds.json`" in table


def test_readme_table_refuses_stale_seeds(tmp_path: Path) -> None:
    root = publish_figures(tmp_path, seeds=True)
    res = json.loads((root / "cpu" / "results.json").read_text())
    res["recovery"]["test_acc_pred_coarse"] = 0.5
    save_json(root / "cpu" / "results.json", res)
    with pytest.raises(StaleSeeds, match="seeds.json does not summarise"):
        readme_table(root)


def test_publishing_leaves_the_docs_alone_and_says_how_to_rebuild_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from nbutils import stages
    from nbutils.config import resolve

    root = publish_figures(tmp_path / "figures", seeds=True)
    new = cpu_runs()[0]
    new["recovery"]["test_acc_pred_coarse"] = 0.5
    save_json(tmp_path / "run" / "results.json", new)
    monkeypatch.setattr(stages, "FIGURES_DIR", root)
    monkeypatch.setattr(stages, "refresh_docs", lambda: pytest.fail("publish rebuilt the docs"))
    stages.publish(resolve("ci", run_dir=str(tmp_path / "run")), root / "cpu")
    assert json.loads((root / "cpu" / "results.json").read_text()) == new
    err = capsys.readouterr().err
    assert "python -m nbutils seeds" in err and "python -m nbutils readme" in err
    with pytest.raises(StaleSeeds):
        readme_table(root)


def test_markdown_table_shows_intervals() -> None:
    table = markdown_table(json.loads(PAPER.read_text()))
    assert "| 91.6% [91.0, 92.1] |" in table and CI95_METHOD in table


def bars(fig: Figure) -> dict[float, tuple[float, float, float]]:
    """x -> (height, error-bar low, error-bar high) of the bars drawn on a figure's one axes."""
    (ax,) = fig.axes
    (container,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    segments = container.errorbar.lines[2][0].get_segments()
    return {round(p.get_x() + p.get_width() / 2, 6): (p.get_height(), s[0][1], s[1][1])
            for p, s in zip(container.patches, segments, strict=True)}


def test_variants_figure_plots_values_and_intervals() -> None:
    res = json.loads(PAPER.read_text())
    fig = plot_recovery_variants(res)
    drawn = bars(fig)
    rec, ctrl = res["recovery"], res["controls"]["random_init"]
    expected = {0: (rec["test_acc_true_coarse"], *rec["ci95"]["test_acc_true_coarse"]),
                1: (rec["test_acc_pred_coarse"], *rec["ci95"]["test_acc_pred_coarse"]),
                4: (res["baseline"]["test_acc"], *res["baseline"]["ci95"]["test_acc"]),
                5: (ctrl["test_acc_true_coarse"], *ctrl["ci95"]["test_acc_true_coarse"])}
    assert drawn.keys() == expected.keys()
    for x, values in expected.items():
        assert drawn[x] == pytest.approx(values, abs=1e-12)
    (ax,) = fig.axes
    notes = [t for t in ax.texts if t.get_text() == "not\ncomputed"]
    assert sorted(t.get_position()[0] for t in notes) == [2, 3]
    paper = [line for line in ax.lines if list(line.get_ydata()) == [PAPER_TEST_ACC] * 2]
    assert len(paper) == 1
    plt.close(fig)


def test_variants_figure_with_every_variant() -> None:
    res = paper_record()
    res["recovery"].update(test_cluster_acc_true_coarse=0.97, test_cluster_acc_pred_coarse=0.92)
    fig = plot_recovery_variants(with_intervals(res))
    drawn = bars(fig)
    assert drawn[2][0] == 0.97 and drawn[3][0] == 0.92 and drawn[3][1] < 0.92 < drawn[3][2]
    assert not [t for t in fig.axes[0].texts if "computed" in t.get_text()]
    plt.close(fig)


def test_a_quantity_every_seed_gives_alike_shows_no_spread() -> None:
    from nbutils.results import _seed_spread

    raw = "controls.raw_pixels.test_acc_true_coarse"
    assert _seed_spread({"sd": 0.0, "n": 3, "values": [0.645] * 3}, raw) == ""
    assert _seed_spread({"sd": math.nan, "n": 1, "values": [0.645]}, raw) == ""
    # Values 0.1, 0.2, 0.3: sd 0.1, t(0.975, 2) * 0.1 / sqrt(3) = 0.2484 around 0.2.
    assert _seed_spread({"sd": 0.1, "n": 3, "values": [0.1, 0.2, 0.3]}, "ratio_to_baseline") == \
        " ± 0.100 [-0.048, 0.448]"


def test_a_column_head_says_whether_the_run_holds_the_terminal_phase() -> None:
    from nbutils.results import _column_head

    res = {"width": 16, "epochs": 40, "device": "cpu (2 threads, 2 cores)",
           "config": {"augment": False},
           "terminal_phase": {"reached": True, "onset_epoch": 16, "held_fraction": 0.6}}
    assert _column_head("full", res, None) == (
        "`full`: w=16, 40 epochs, no augmentation, cpu (2 threads, 2 cores), in the terminal "
        "phase from epoch 16 (60% of training)")
    res["terminal_phase"]["reached"] = False
    assert _column_head("full", res, None).endswith("before the terminal phase")
    seeds = {"seeds": [0, 1, 2], "in_phase": 2}
    assert _column_head("full", res, seeds) == (
        "`full`: w=16, 40 epochs, no augmentation, 3 seeds, mean ± sd, 2 of 3 in the terminal "
        "phase")
