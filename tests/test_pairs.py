"""nbutils.pairs: a merged pair's separability and its counterfactual controls, on closed-form
geometry and on tiny real runs (a fake CIFAR cache, seconds)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from conftest import fake_split
from PIL import Image

from nbutils import pairs, plots, sweeps
from nbutils.config import resolve
from nbutils.data import save_cache
from nbutils.features import load_features
from nbutils.plots import tables
from nbutils.recovery import raw_pixel_features, recover_fine_labels
from nbutils.run_data import load_run_data
from nbutils.runs import ArtifactError, create_run, load_json, load_run

MOD5_PAIRS = ["airplane/dog", "automobile/frog", "bird/horse", "cat/ship", "deer/truck"]


def blobs(n: int, centres: dict[int, float], seed: int, dim: int = 8, sd: float = 1.0
          ) -> tuple[np.ndarray, np.ndarray]:
    """n float32 points per label, Gaussian around `centre` on the first axis, else at 0."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.asarray(list(centres), dtype=np.int64), n)
    x = rng.normal(scale=sd, size=(len(y), dim))
    x[:, 0] += np.asarray([centres[c] for c in y.tolist()])
    return x.astype(np.float32), y


def test_separated_blobs_are_recovered_exactly() -> None:
    xtr, ytr = blobs(100, {3: 0.0, 5: 20.0}, seed=0)
    xte, yte = blobs(50, {3: 0.0, 5: 20.0}, seed=1)
    assert pairs.pair_separability(xtr, ytr, xte, yte, [3, 5], n_init=4) == {"train": 1.0,
                                                                             "test": 1.0}


def test_identical_classes_sit_at_the_matching_bound() -> None:
    xtr, ytr = blobs(1000, {3: 0.0, 5: 0.0}, seed=0)
    xte, yte = blobs(1000, {3: 0.0, 5: 0.0}, seed=1)
    acc = pairs.pair_separability(xtr, ytr, xte, yte, [3, 5], n_init=4)
    # Matching on train can only help train: it is >= 0.5; test is a coin flip.
    assert 0.5 <= acc["train"] < 0.54 and abs(acc["test"] - 0.5) < 0.04


def test_label_order_and_cluster_order_do_not_matter() -> None:
    xtr, ytr = blobs(60, {3: 0.0, 5: 4.0}, seed=0)
    xte, yte = blobs(60, {3: 0.0, 5: 4.0}, seed=1)
    acc = pairs.pair_separability(xtr, ytr, xte, yte, [3, 5], n_init=4)
    # The same geometry with the labels swapped: the Hungarian matching follows.
    swap = {3: 5, 5: 3}
    swapped = pairs.pair_separability(xtr, np.vectorize(swap.get)(ytr), xte,
                                      np.vectorize(swap.get)(yte), [5, 3], n_init=4)
    assert acc == swapped and 0.9 < acc["test"] < 1.0


def test_test_images_take_the_train_centroids() -> None:
    xtr, ytr = blobs(50, {0: 0.0, 1: 10.0}, seed=0, sd=0.1)
    # The test classes are shifted by 6: both now lie nearer the centroid of class 1, so
    # nearest-train-centroid labelling gets half right, where clustering test would get all.
    xte, yte = blobs(50, {0: 6.0, 1: 16.0}, seed=1, sd=0.1)
    acc = pairs.pair_separability(xtr, ytr, xte, yte, [0, 1], n_init=4)
    assert acc == {"train": 1.0, "test": 0.5}


def test_feature_norm_is_applied_before_clustering() -> None:
    # Two classes along one direction, differing only in length: l2 rows make them one point.
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    x = (np.where(y == 1, 3.0, 1.0)[:, None] * np.ones(4)
         + rng.normal(scale=0.01, size=(200, 4))).astype(np.float32)
    assert pairs.pair_separability(x, y, x, y, [0, 1], feature_norm="none") == {"train": 1.0,
                                                                                "test": 1.0}
    assert pairs.pair_separability(x, y, x, y, [0, 1], feature_norm="l2")["train"] < 0.7


def test_groups_reproduce_the_pipelines_per_superclass_recovery() -> None:
    rng = np.random.default_rng(0)
    f2c = np.arange(10) % 5
    ytr, yte = np.repeat(np.arange(10), 40), np.repeat(np.arange(10), 20)
    means = rng.normal(scale=0.6, size=(10, 16))
    xtr = (means[ytr] + rng.normal(size=(len(ytr), 16))).astype(np.float32)
    xte = (means[yte] + rng.normal(size=(len(yte), 16))).astype(np.float32)
    for norm in ("l2", "center_l2", "standardize"):
        rec = recover_fine_labels(xtr, ytr, xte, yte, f2c, n_init=3, seed=2, feature_norm=norm,
                                  probe=False).metrics
        got = pairs.separability(xtr, ytr, xte, yte, [[s, s + 5] for s in range(5)], n_init=3,
                                 seed=2, feature_norm=norm)
        assert [g["train"] for g in got] == rec["per_superclass_train"], norm
        assert [g["test"] for g in got] == rec["per_superclass"], norm


def test_a_group_of_three_classes_uses_k_equal_three() -> None:
    xtr, ytr = blobs(50, {0: 0.0, 4: 20.0, 7: 40.0}, seed=0)
    xte, yte = blobs(20, {0: 0.0, 4: 20.0, 7: 40.0}, seed=1)
    assert pairs.separability(xtr, ytr, xte, yte, [[7, 0, 4]]) == [{"train": 1.0, "test": 1.0}]


@pytest.mark.parametrize("kwargs, name", [
    ({"pair": [3]}, "pair"),
    ({"pair": [3, 3]}, "groups"),
    ({"pair": [3, 12]}, "groups"),
    ({"pair": [3, 4, 5]}, "pair"),
    ({"pair": [3.0, 5.0]}, "groups"),
    ({"feature_norm": "unit"}, "feature_norm"),
    ({"n_init": 0}, "n_init"),
    ({"pair": [4, 6]}, "test_fine"),
])
def test_bad_input_names_the_parameter(kwargs: dict, name: str) -> None:
    xtr, ytr = blobs(10, {3: 0.0, 4: 1.0, 5: 2.0, 6: 3.0}, seed=0)
    xte, yte = blobs(10, {3: 0.0, 5: 2.0}, seed=1)
    call = {"pair": [3, 5], **kwargs}
    with pytest.raises(ValueError, match=name):
        pairs.pair_separability(xtr, ytr, xte, yte, **call)


# --------------------------------------------------------------------------- tiny real runs


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CIFAR-10-format cache of random images."""
    root = tmp_path_factory.mktemp("cache") / "c10"
    save_cache(root, fake_split(6, 10, 0), fake_split(3, 10, 1))
    return root


def tiny_run(root: Path, cache: Path, baseline: bool, **params) -> str:
    """A finished pipeline run of a few seconds; its run directory."""
    cfg = resolve("ci", run_dir=str(root), data_root=str(cache), width=2, epochs=1,
                  train_per_class=6, test_per_class=3, checkpoint_epochs=[0, 1], amp="off",
                  device="cpu", n_init=2, train_baseline=baseline, **params)
    sweeps.run_point(cfg)
    return cfg.run_dir


@pytest.fixture(scope="module")
def with_baseline(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> str:
    """A tiny run that trained the 10-label baseline too."""
    return tiny_run(tmp_path_factory.mktemp("runs") / "base", cache, baseline=True)


@pytest.mark.slow
def test_run_pairs_measures_every_merged_pair(with_baseline: str) -> None:
    out = pairs.run_pairs(with_baseline)
    assert (Path(with_baseline) / pairs.PAIRS_FILE).is_file()
    assert [p["pair"] for p in out["pairs"]] == MOD5_PAIRS
    assert out["pairs"][0]["classes"] == [0, 5] and out["mapping"] == "mod5"
    res = load_json(Path(with_baseline) / "results.json")
    assert [p["merged"]["test"] for p in out["pairs"]] == res["recovery"]["per_superclass"]
    assert ([p["merged"]["train"] for p in out["pairs"]]
            == res["recovery"]["per_superclass_train"])
    for p in out["pairs"]:
        for source in pairs.SOURCES:
            assert all(0.0 <= p[source][s] <= 1.0 for s in pairs.SPLITS), source
        # Matching on train labels: a pair's train accuracy is never below one half.
        assert p["baseline"]["train"] >= 0.5


@pytest.mark.slow
def test_each_control_reads_its_own_features(with_baseline: str) -> None:
    out = pairs.run_pairs(with_baseline)
    run = load_run(with_baseline)
    groups = [p["classes"] for p in out["pairs"]]

    def of(model: str, epoch: int) -> list[dict]:
        f = load_features(run, model, epoch)
        return pairs.separability(f["train_features"], f["train_fine"], f["test_features"],
                                  f["test_fine"], groups, run.n_init, run.seed, run.feature_norm)

    assert [p["baseline"] for p in out["pairs"]] == of("baseline", run.epochs)
    assert [p["random_init"] for p in out["pairs"]] == of("coarse", 0)
    # The pipeline's own protocol on the merged model's features gives results.json's numbers.
    assert [p["merged"] for p in out["pairs"]] == of("coarse", run.epochs)
    data = load_run_data(run)
    raw = pairs.separability(
        raw_pixel_features(data.train.images), data.train.labels,
        raw_pixel_features(data.test.images, reference=data.train.images), data.test.labels,
        groups, run.n_init, run.seed, run.feature_norm)
    assert [p["raw_pixels"] for p in out["pairs"]] == raw


@pytest.mark.slow
def test_a_finished_pairs_json_is_read_back(with_baseline: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first = pairs.run_pairs(with_baseline)

    def refuse(cfg):
        raise AssertionError("recomputed")

    monkeypatch.setattr(pairs, "compute_pairs", refuse)
    assert pairs.run_pairs(with_baseline) == first
    with pytest.raises(AssertionError, match="recomputed"):
        pairs.run_pairs(with_baseline, overwrite=True)


@pytest.mark.slow
def test_a_run_without_baseline_reports_it_absent(tmp_path: Path, cache: Path,
                                                  with_baseline: str) -> None:
    run = tiny_run(tmp_path / "nobase", cache, baseline=False, mapping="semantic")
    alone = pairs.run_pairs(run)
    assert all(p["baseline"] is None for p in alone["pairs"])
    assert alone["pairs"][3]["pair"] == "cat/dog"
    rows = pairs.pair_summary([alone, pairs.run_pairs(with_baseline)])
    semantic = [r for r in rows if r["mapping"] == "semantic"]
    assert len(rows) == 10 and all(r["baseline"] is None for r in semantic)
    corr = pairs.correlations(rows)
    assert corr["baseline"]["n_pairs"] == 5 and set(corr) == set(pairs.CONTROLS)
    frame = tables.pair_frame(rows)
    assert len(frame) == 10 and (frame.loc["semantic", "merged - baseline"] == "-").all()


def test_a_run_without_results_is_refused(tmp_path: Path, cache: Path) -> None:
    # Configured but never trained: there is nothing to set the controls beside.
    cfg = resolve("ci", run_dir=str(tmp_path / "run"), data_root=str(cache))
    create_run(cfg)
    with pytest.raises(ArtifactError, match="no results.json"):
        pairs.run_pairs(cfg.run_dir)


# --------------------------------------------------------------------------- over seeds


def record(seed: int, mapping: str, merged: float, base: float | None) -> dict:
    """A pairs.json-shaped record with one pair."""
    def acc(v: float) -> dict:
        return {"train": v, "test": v}

    return {"mapping": mapping, "seed": seed, "pairs": [
        {"pair": "cat/dog", "classes": [3, 5], "merged": acc(merged),
         "baseline": None if base is None else acc(base), "random_init": acc(0.55),
         "raw_pixels": acc(0.6)}]}


def test_pair_summary_spreads_over_seeds_with_the_sample_sd() -> None:
    rows = pairs.pair_summary([record(0, "semantic", 0.6, 0.8), record(1, "semantic", 0.8, 0.9),
                               record(0, "mod5", 0.9, None)])
    sem, mod = rows
    assert sem["seeds"] == [0, 1] and sem["merged"]["test"]["n"] == 2
    assert math.isclose(sem["merged"]["test"]["mean"], 0.7)
    assert math.isclose(sem["merged"]["test"]["sd"], math.sqrt(0.02))  # ddof=1
    assert mod["baseline"] is None and math.isnan(mod["merged"]["train"]["sd"])
    with pytest.raises(ValueError, match="records"):
        pairs.pair_summary([])


def test_correlations_follow_a_known_line() -> None:
    recs = [record(0, f"m{i}", 0.5 + 0.1 * i, 0.6 + 0.05 * i) for i in range(4)]
    corr = pairs.correlations(pairs.pair_summary(recs))
    base = corr["baseline"]
    assert base["n_pairs"] == 4 and math.isclose(base["pearson"], 1.0)
    assert math.isclose(base["spearman"], 1.0) and math.isclose(base["slope"], 2.0)
    # A control that is the same for every pair correlates with nothing.
    assert corr["raw_pixels"]["pearson"] is None and corr["raw_pixels"]["n_pairs"] == 4
    assert list(tables.correlation_frame(corr).index) == [pairs.SOURCES[s] for s in corr]
    with pytest.raises(ValueError, match="split"):
        pairs.correlations([], split="val")


def test_pair_figures_are_saved(tmp_path: Path) -> None:
    recs = [record(s, f"m{i}", 0.5 + 0.1 * i + 0.01 * s, None if i == 0 else 0.6 + 0.05 * i)
            for i in range(4) for s in (0, 1)]
    rows = pairs.pair_summary(recs)
    figures = plots.pair_figures(rows, pairs.correlations(rows), "setting")
    assert set(figures) == {"hierarchies_pair_controls", "hierarchies_pair_vs_controls"}
    for name, fig in figures.items():
        plots.save_fig(fig, tmp_path, name)
        with Image.open(tmp_path / f"{name}.png") as img:
            assert img.format == "PNG" and min(img.size) > 300
    plt.close("all")


def test_seeds_record_pairs_each_seed_with_its_own_baseline(tmp_path: Path) -> None:
    def record(seed: int, merged: float, baseline: float | None) -> dict:
        row = {"pair": "airplane/dog", "classes": [0, 5],
               "merged": {"train": 1.0, "test": merged},
               "baseline": None if baseline is None else {"train": 1.0, "test": baseline},
               "random_init": {"train": 0.6, "test": 0.6}, "raw_pixels": None}
        return {"mapping": "mod5", "seed": seed, "feature_norm": "l2", "n_init": 10,
                "sources": {}, "pairs": [row]}

    # Differences -0.02, -0.04, -0.06: mean -0.04, sd 0.02, t95 = -0.04 -+ t(2) * 0.02 / sqrt(3).
    rec = pairs.seeds_record([record(0, 0.96, 0.98), record(1, 0.94, 0.98),
                              record(2, 0.90, 0.96)])
    row = rec["pairs"][0]
    diff = row["merged_minus_baseline_test"]
    assert rec["seeds"] == [0, 1, 2] and row["seeds"] == [0, 1, 2]
    assert diff["mean"] == pytest.approx(-0.04) and diff["sd"] == pytest.approx(0.02)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)
    assert diff["t95"] == pytest.approx((-0.04 - half, -0.04 + half))
    assert row["raw_pixels"] is None and row["merged"]["test"]["n"] == 3
    # A seed without a baseline is left out of the difference, not read as zero.
    rec = pairs.seeds_record([record(0, 0.96, 0.98), record(1, 0.94, None)])
    assert rec["pairs"][0]["merged_minus_baseline_test"]["values"] == [pytest.approx(-0.02)]
    assert pairs.pairs_file(tmp_path) is None
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "pairs.json").write_text("{}")
    assert pairs.pairs_file(tmp_path) == tmp_path / "logs" / "pairs.json"
