"""Experiment summaries, sweep naming and the 20-label split, on hand-made cases."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fake_split

from nbutils import stats, summaries, sweeps
from nbutils.config import RunConfig, resolve
from nbutils.data import save_cache
from nbutils.paths import runs_root
from nbutils.plots import tables
from nbutils.runs import (
    RunConfigMismatch,
    checkpoint_path,
    create_run,
    features_path,
    load_json,
    load_torch,
    save_json,
    save_npz,
)


def fake_result(seed: int = 0, mapping: str = "mod5", lr: float = 0.1, wd: float = 5e-4,
                train_acc: tuple[float, ...] = (0.2, 0.9, 1.0, 1.0),
                rec: tuple[float, ...] = (0.6, 0.8, 0.85, 0.9)) -> dict:
    """A results.json-shaped record with a 4-checkpoint history."""
    cfg = resolve("exp", seed=seed, mapping=mapping, lr=lr, weight_decay=wd).to_dict()
    history = [{"epoch": e, "coarse_train_acc": a,
                "recovery": {"test_acc_true_coarse": r, "train_cluster_acc": r,
                             "test_acc_pred_coarse": None, "test_cluster_acc_true_coarse": r - 0.2},
                "nc": {"coarse": {"nc1": 1.0 / (e + 1)}, "fine": {"nc1": 2.0},
                       "fine_structure": {"fine_variance_fraction_mean": r / 2,
                                          "nc1_within_superclass_mean": 1.0}}}
               for e, a, r in zip((0, 5, 10, 15), train_acc, rec, strict=True)]
    return {"config": cfg, "history": history, "coarse": {"train_acc": train_acc[-1]},
            "recovery": {**history[-1]["recovery"], "per_superclass": [0.9, 0.8, 0.7, 0.6, 0.5]},
            "nc": history[-1]["nc"]}


def test_spread_over_seeds_uses_the_sample_sd() -> None:
    s = stats.spread([0.8, 0.9, 1.0, math.nan])
    assert (s["n"], s["min"], s["max"]) == (3, 0.8, 1.0)
    # ddof=1: sqrt(((-0.1)^2 + 0 + 0.1^2) / 2) = 0.1
    assert math.isclose(s["mean"], 0.9) and math.isclose(s["sd"], 0.1)
    assert stats.spread([])["n"] == 0 and math.isnan(stats.spread([0.5])["sd"])


def test_dynamics_reads_the_terminal_phase_and_its_change() -> None:
    res = fake_result()
    summary = summaries.dynamics_summary([res, fake_result(seed=1, rec=(0.5, 0.7, 0.8, 0.75))])
    # Clean train accuracy >= 0.995 from epoch 10 of 15: held for 1/3 >= 0.3 of training.
    assert summary["epochs"] == [0, 5, 10, 15] and summary["tpt_epoch"] == [10, 10]
    assert summary["phase"][0]["reached"] and math.isclose(summary["phase"][0]["held_fraction"],
                                                           1 / 3)
    sd = summary["series"]["recovery.test_acc_true_coarse"]["sd"]
    assert math.isclose(sd[-1], math.sqrt(2) * 0.075)
    change = summaries.terminal_change(summary, "recovery.test_acc_true_coarse")
    assert [round(r["change"], 6) for r in change["per_seed"]] == [0.05, -0.05]
    assert math.isclose(change["change"]["mean"], 0.0, abs_tol=1e-12)
    assert "coarse_train_acc" not in summaries.terminal_changes(summary)
    # Above threshold only at the last checkpoint: no terminal phase, and no change to report.
    late = summaries.dynamics_summary([fake_result(train_acc=(0.1, 0.2, 0.3, 0.999))])
    assert late["tpt_epoch"] == [None] and not late["phase"][0]["reached"]
    assert summaries.terminal_change(late, "nc.coarse.nc1") is None
    with pytest.raises(ValueError, match="threshold"):
        summaries.dynamics_summary([res], threshold=1.5)


def test_history_matrix_needs_equal_checkpoints() -> None:
    other = fake_result()
    other["history"] = other["history"][:3]
    with pytest.raises(ValueError, match="same checkpoint epochs"):
        summaries.history_matrix([fake_result(), other], "nc.coarse.nc1")


def test_grid_summary_means_over_seeds_and_leaves_missing_cells_nan() -> None:
    results = [fake_result(seed=0, lr=0.1, wd=5e-4, rec=(0, 0, 0, 0.8)),
               fake_result(seed=1, lr=0.1, wd=5e-4, rec=(0, 0, 0, 0.9)),
               fake_result(seed=0, lr=0.01, wd=5e-5, rec=(0, 0, 0, 0.7))]
    grid = summaries.grid_summary(results, [0.1, 0.01], [5e-4, 5e-5])
    m = grid["mean"]["recovery.test_acc_true_coarse"]
    assert math.isclose(m[0][0], 0.85) and m[1][1] == 0.7
    assert math.isnan(m[0][1]) and math.isnan(m[1][0])
    assert "2 seeds" in grid["setting"] and len(tables.grid_frame(grid)) == 4


def test_pair_names_and_table() -> None:
    assert summaries.pair_names(np.arange(10) % 5)[3] == "cat/ship"
    rows = summaries.pair_table([fake_result(seed=0), fake_result(seed=1)])
    assert rows[0]["pair"] == "deer/truck" and rows[0]["n"] == 2 and rows[0]["mean"] == 0.5
    assert rows[-1]["pair"] == "airplane/dog"


def test_summarise_groups_by_mapping() -> None:
    summary = summaries.summarise(
        [fake_result(0), fake_result(1), fake_result(0, mapping="semantic")], "mapping")
    assert list(summary) == ["mod5", "semantic"] and summary["mod5"]["seeds"] == [0, 1]
    assert summary["mod5"]["recovery.test_acc_true_coarse"]["n"] == 2
    assert len(tables.group_frame(summary)) == 2


def test_best_cell_is_chosen_among_cells_in_the_terminal_phase() -> None:
    late = (0.1, 0.2, 0.3, 0.999)
    results = [fake_result(seed=0, lr=0.1, wd=5e-4, rec=(0, 0, 0, 0.8)),
               fake_result(seed=1, lr=0.1, wd=5e-4, rec=(0, 0, 0, 0.9)),
               fake_result(seed=0, lr=0.01, wd=5e-4, rec=(0, 0, 0, 0.95), train_acc=late),
               fake_result(seed=1, lr=0.01, wd=5e-4, rec=(0, 0, 0, 0.95))]
    grid = summaries.grid_summary(results, [0.1, 0.01], [5e-4])
    assert grid["reached"] == [[1.0], [0.5]] and grid["evaluated_on"] == "test"
    # Onset at epoch 10 of 15 holds a third of training; the late seed only its last checkpoint.
    assert grid["held"] == [[[pytest.approx(1 / 3)] * 2], [[0.0, pytest.approx(1 / 3)]]]
    assert math.isclose(grid["sd"]["recovery.test_acc_true_coarse"][0][0], math.sqrt(0.005))
    # lr=0.01 scores higher but one of its seeds never reached the terminal phase.
    best = summaries.best_cell(grid, "recovery.test_acc_true_coarse")
    assert (best["lr"], best["all_in_terminal_phase"], best["cells_in_terminal_phase"]) == (
        0.1, True, 1)
    assert math.isclose(best["value"], 0.85)
    none = summaries.grid_summary(results[2:3], [0.01], [5e-4])
    fallback = summaries.best_cell(none, "recovery.test_acc_true_coarse")
    assert fallback["lr"] == 0.01 and not fallback["all_in_terminal_phase"]
    val = summaries.grid_summary([fake_result(seed=0) | {"config": resolve(
        "exp", val_per_class=50).to_dict()}], [0.1], [5e-4])
    assert val["evaluated_on"] == "validation (50/class carved from train)"


def test_grid_points_visit_every_cell_once_before_any_second_seed() -> None:
    points = sweeps.grid_points([0.1, 0.01], [5e-3, 5e-4, 5e-5], [0, 1])
    assert [p["seed"] for p in points] == [0] * 6 + [1] * 6
    assert points[:6] == [{**p, "seed": 0} for p in points[6:]]
    assert {(p["lr"], p["weight_decay"]) for p in points[:6]} == {
        (lr, wd) for lr in (0.1, 0.01) for wd in (5e-3, 5e-4, 5e-5)}


def test_run_names_share_runs_across_experiments() -> None:
    grid = sweeps.sweep_configs(sweeps.grid_points([0.1], [5e-4], [0]), "exp", "root")
    hier = sweeps.sweep_configs(sweeps.mapping_points({"mod5": [0]}), "exp", "root")
    name = "mapping=mod5_lr=0.1_weight_decay=0.0005_seed=0"
    assert grid[0].run_dir == hier[0].run_dir == str(runs_root() / "root" / name)
    rand = sweeps.sweep_configs([{"mapping": "random:2", "seed": 1}], "exp", "r")
    name = "mapping=random-2_lr=0.1_weight_decay=0.0005_seed=1"
    assert rand[0].run_dir == str(runs_root() / "r" / name)


def test_mapping_points_come_seed_by_seed() -> None:
    points = sweeps.mapping_points({"mod5": [0, 1, 2], "semantic": [0, 1], "random:0": [5]})
    assert [(p["mapping"], p["seed"]) for p in points] == [
        ("mod5", 0), ("semantic", 0), ("random:0", 5), ("mod5", 1), ("semantic", 1), ("mod5", 2)]


@pytest.mark.parametrize("call, name", [
    (lambda: sweeps.sweep_configs([], "exp", "r"), "points"),
    (lambda: sweeps.sweep_configs([{"seed": 0}, {"seed": 0}], "exp", "r"), "points"),
    (lambda: sweeps.sweep_configs([{"lr": -1}], "exp", "r"), "lr"),
    (lambda: sweeps.sweep_configs([{"mapping": "nope"}], "exp", "r"), "mapping"),
    (lambda: sweeps.sweep_configs([{"seed": 0}], "exp", "r", seed=1), "both set"),
    (lambda: sweeps.run_sweep([{"seed": 0}], "nope", "r"), "profile"),
    (lambda: sweeps.grid_points([], [5e-4], [0]), "lrs"),
    (lambda: sweeps.mapping_points({"mod5": []}), "mod5"),
    (lambda: sweeps.run_sweep([{"seed": 0}], "exp", "r", adopt_from="runs/s{seed}"),
     "adopt_from"),
    (lambda: sweeps.run_sweep([{"seed": 0}], "exp", "r", adopt_from=["runs/{mapping}"]),
     "adopt_from"),
])
def test_bad_sweeps_fail_before_any_work(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


def test_finished_runs_are_read_back_only_with_the_same_config(tmp_path: Path) -> None:
    cfg = sweeps.sweep_configs([{"seed": 0}], "exp", tmp_path)[0]
    assert sweeps.finished(cfg) is None
    # Where the data lives, or a config field added later, does not change the results.
    stored = {**cfg.to_dict(), "data_root": "x", "a_later_field": 1}
    save_json(Path(cfg.run_dir) / "results.json", {"config": stored})
    assert sweeps.finished(cfg) is not None
    other = sweeps.sweep_configs([{"seed": 0}], "exp", tmp_path, epochs=2)[0]
    assert sweeps.finished(other) is None


def test_an_archived_point_resumes_the_sweep_where_its_run_directory_is_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    points = [{"seed": 0}]
    cfg = sweeps.sweep_configs(points, "exp", tmp_path / "here" / "tpt")[0]
    save_json(Path(cfg.run_dir) / "results.json", {"config": cfg.to_dict(), "acc": 0.5})
    # The test features a `feature_epochs="phase"` run keeps travel with its records.
    (Path(cfg.run_dir) / "phase_features.npz").write_bytes(b"onset and end")
    seen = []

    def save_pairs(c: RunConfig) -> None:
        seen.append(c.run_dir)
        save_json(Path(c.run_dir) / "pairs.json", {"config": c.to_dict()})

    archive = sweeps.archive_dir(tmp_path / "figures" / "runs", "runs/experiments/tpt")
    assert archive == tmp_path / "figures" / "runs" / "tpt"
    sweeps.run_sweep(points, "exp", tmp_path / "here" / "tpt", launcher="inline",
                     progress=False, then=save_pairs, archive=archive)
    assert seen == [cfg.run_dir]
    name = Path(cfg.run_dir).name
    stored = load_json(archive / name / "results.json")
    # The archive names the run, not this machine's path to it.
    assert stored == {"config": {**cfg.to_dict(), "run_dir": name}, "acc": 0.5}
    assert load_json(archive / name / "pairs.json")["config"]["run_dir"] == name
    assert (archive / name / "phase_features.npz").read_bytes() == b"onset and end"

    def no_training(*args, **kwargs):
        raise AssertionError("an archived point was trained again")

    monkeypatch.setattr(sweeps.stages, "run", no_training)
    elsewhere = tmp_path / "elsewhere" / "tpt"
    [res] = sweeps.run_sweep(points, "exp", elsewhere, launcher="inline", progress=False,
                             archive=archive)
    moved = sweeps.sweep_configs(points, "exp", elsewhere)[0]
    assert res == {"config": moved.to_dict(), "acc": 0.5}
    assert load_json(Path(moved.run_dir) / "pairs.json")["config"]["run_dir"] == moved.run_dir
    assert (Path(moved.run_dir) / "phase_features.npz").read_bytes() == b"onset and end"
    assert not sweeps.restore(moved, archive)
    # Another setting is not restored from it.
    other = sweeps.sweep_configs(points, "exp", tmp_path / "third", epochs=2)[0]
    assert not sweeps.restore(other, archive) and not Path(other.run_dir).exists()
    with pytest.raises(ValueError, match="then: must be a function"):
        sweeps.run_sweep(points, "exp", elsewhere, launcher="inline", then="pairs")


def test_archived_runs_older_than_a_key_compare_by_what_they_trained_with() -> None:
    now = resolve("tpt", seed=0).to_dict()
    assert now["schedule"] == "onecycle" and now["step_milestones"] is not None
    # Archived before `augment` existed (every run then trained with crop and flip) and with no
    # lr drops recorded, which the one-cycle schedule never reads.
    old = {k: v for k, v in now.items() if k != "augment"} | {"step_milestones": None}
    assert sweeps.comparable(old) == sweeps.comparable(now)
    assert sweeps.comparable(old) != sweeps.comparable({**now, "augment": False})
    step = resolve("full", seed=0).to_dict()
    assert sweeps.comparable(step) != sweeps.comparable({**step, "step_milestones": [0.5, 0.75]})


def test_a_point_of_another_setting_under_the_root_names_the_root(tmp_path: Path) -> None:
    old = sweeps.sweep_configs([{"seed": 0}], "exp", tmp_path)[0]
    create_run(old)
    new = sweeps.sweep_configs([{"seed": 0}], "exp", tmp_path, epochs=2)[0]
    assert new.run_dir == old.run_dir
    with pytest.raises(RunConfigMismatch, match="epochs") as err:
        sweeps.run_point(new)
    assert f"{tmp_path} holds runs of another setting" in str(err.value)
    assert "runs_root" in str(err.value) and "--force" not in str(err.value)


def test_unknown_experiment_notebook_is_refused_before_any_work(tmp_path: Path) -> None:
    from nbutils.reproduce import run_experiments

    with pytest.raises(ValueError, match="experiments: unknown.*allowed: 06_dynamics"):
        run_experiments(("06_dynamcs",), out=tmp_path / "out", publish_dir=tmp_path / "pub")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_runs_differing_only_in_mapping_share_one_trained_baseline(tmp_path: Path) -> None:
    save_cache(tmp_path / "c10", fake_split(6, 10, 0), fake_split(3, 10, 1))
    common = dict(data_root=str(tmp_path / "c10"), width=2, epochs=1, train_per_class=6,
                  test_per_class=3, checkpoint_epochs=[0, 1], amp="off", device="cpu",
                  n_init=2, train_baseline=True)
    first, shared = sweeps.sweep_configs([{"mapping": "mod5"}, {"mapping": "semantic"}], "ci",
                                         tmp_path / "runs", **common)
    alone = sweeps.sweep_configs([{"mapping": "semantic"}], "ci", tmp_path / "alone",
                                 **common)[0]
    sweeps.run_point(first)
    # A mark the analysis ignores shows whether the twin's feature file was copied.
    path = features_path(first, "baseline", 1)
    save_npz(path, **dict(np.load(path)), copied_from_twin=np.int64(1))
    for cfg in (shared, alone):
        sweeps.run_point(cfg)
    assert sweeps.baseline_twin(shared) == Path(first.run_dir)
    # The copied baseline is the one training it again would give, weight for weight.
    for epoch in (0, 1):
        copied = load_torch(checkpoint_path(shared, "baseline", epoch))["model"]
        trained = load_torch(checkpoint_path(alone, "baseline", epoch))["model"]
        assert all(torch.equal(copied[k], trained[k]) for k in trained)
    assert sweeps.finished(shared)["baseline"] == sweeps.finished(alone)["baseline"]
    # Its features were copied, not extracted again, and are what extraction gives.
    assert "copied_from_twin" in np.load(features_path(shared, "baseline", 1)).files
    for epoch in (0, 1):
        mine, again = (np.load(features_path(c, "baseline", epoch)) for c in (shared, alone))
        assert all(np.array_equal(mine[k], again[k]) for k in again.files)
    # Another seed trains its own.
    other = sweeps.sweep_configs([{"mapping": "semantic", "seed": 1}], "ci", tmp_path / "runs",
                                 **common)[0]
    assert sweeps.baseline_twin(other) is None


def fake_coarse_source(root: Path, **params) -> RunConfig:
    """A finished `ci` run of seed 0 with a 10-label baseline: coarse files without training."""
    cfg = resolve("ci", run_dir=str(root / "seed0"), seed=0, train_baseline=True, **params)
    create_run(cfg)
    coarse = Path(cfg.run_dir) / "coarse"
    for epoch in cfg.checkpoint_epochs:
        checkpoint_path(cfg, "coarse", epoch).parent.mkdir(parents=True, exist_ok=True)
        checkpoint_path(cfg, "coarse", epoch).write_bytes(f"weights {epoch}".encode())
    save_json(coarse / "log.json", [{"epoch": e, "weights_sha256": f"sha{e}"}
                                     for e in range(1, cfg.epochs + 1)])
    save_json(coarse / "train_meta.json", {"device": "cpu"})
    (coarse / "last.pt").write_bytes(b"resume state")
    for epoch in (0, cfg.epochs):
        save_npz(features_path(cfg, "coarse", epoch), train_features=np.full((2, 3), epoch))
    return cfg


def no_analysis(cfg: RunConfig, data=None, progress: bool = True) -> dict:
    """Stand-in for the stages after training: a results.json of the point's config."""
    record = {"config": cfg.to_dict()}
    save_json(Path(cfg.run_dir) / "results.json", record)
    return record


@pytest.fixture
def trainings(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(run_dir, model) of every model a sweep trains; training and analysis are stand-ins."""
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(sweeps.stages, "load_run_data", lambda cfg: None)
    monkeypatch.setattr(sweeps.stages, "train_model",
                        lambda cfg, model, *a, **k: calls.append((cfg.run_dir, model)) or [])
    monkeypatch.setattr(sweeps.stages, "analyze", no_analysis)
    return calls


def test_a_finished_coarse_model_of_the_same_training_is_adopted_not_trained(
        tmp_path: Path, trainings: list, capsys: pytest.CaptureFixture) -> None:
    source = fake_coarse_source(tmp_path / "full")
    pattern = str(tmp_path / "full" / "seed{seed}")
    points = [{"weight_decay": 5e-4, "seed": 0}]
    sweeps.run_sweep(points, "ci", tmp_path / "sweep", launcher="inline", progress=False,
                     train_baseline=False, adopt_from=[pattern])
    assert trainings == []
    cfg = sweeps.sweep_configs(points, "ci", tmp_path / "sweep", train_baseline=False)[0]
    assert f"coarse model copied from {source.run_dir}" in capsys.readouterr().err
    src, dest = Path(source.run_dir) / "coarse", Path(cfg.run_dir) / "coarse"
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert "features/epoch_003.npz" in copied and "last.pt" in copied
    assert all((dest / name).read_bytes() == (src / name).read_bytes() for name in copied)
    assert load_json(dest / "log.json") == load_json(src / "log.json")
    # Once finished, the point keeps its own model.
    assert sweeps.adopt_coarse(cfg, [pattern]) is None


@pytest.mark.parametrize("spoil", ["weight_decay", "mapping", "checkpoint", "unfinished"])
def test_a_coarse_model_of_another_training_or_incomplete_is_not_adopted(
        tmp_path: Path, trainings: list, spoil: str) -> None:
    other = {"weight_decay": {"weight_decay": 5e-3}, "mapping": {"mapping": "semantic"}}
    source = fake_coarse_source(tmp_path / "full", **other.get(spoil, {}))
    if spoil == "checkpoint":
        checkpoint_path(source, "coarse", 2).unlink()
    if spoil == "unfinished":
        log = Path(source.run_dir) / "coarse" / "log.json"
        save_json(log, load_json(log)[:-1])
    points, pattern = [{"weight_decay": 5e-4, "seed": 0}], str(tmp_path / "full" / "seed{seed}")
    cfg = sweeps.sweep_configs(points, "ci", tmp_path / "sweep", train_baseline=False)[0]
    create_run(cfg)
    assert sweeps.adopt_coarse(cfg, [pattern]) is None
    assert not (Path(cfg.run_dir) / "coarse").exists()
    sweeps.run_sweep(points, "ci", tmp_path / "sweep", launcher="inline", progress=False,
                     train_baseline=False, adopt_from=[pattern])
    assert trainings == [(cfg.run_dir, "coarse")]


def test_the_sweep_archive_under_figures_is_committed_not_ignored() -> None:
    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    archive = sweeps.archive_dir(repo / "figures" / "experiments" / "runs", "runs/experiments/tpt")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(archive / "x" / "results.json")],
                             cwd=repo)
    assert ignored.returncode == 1
    assert subprocess.run(["git", "check-ignore", "-q", "runs/x/results.json"],
                          cwd=repo).returncode == 0


def test_onset_to_end_reads_each_run_at_its_own_onset_with_a_t_interval() -> None:
    def run(seed: int, onset: int, a_at: float, a_end: float, reached: bool = True) -> dict:
        accs = [0.5, 0.999 if reached else 0.99, 1.0]
        hist = [{"epoch": 0, "recovery": {"test_acc_true_coarse": 0.6}},
                {"epoch": onset, "recovery": {"test_acc_true_coarse": a_at}},
                {"epoch": 40, "recovery": {"test_acc_true_coarse": a_end}}]
        return {"config": {"seed": seed, "mapping": "mod5", "dataset": "cifar10"},
                "history": hist,
                "clean_train": {"coarse": {"epochs": [12, onset, 40], "accs": accs}}}

    runs = [run(0, 16, 0.95, 0.94), run(1, 18, 0.96, 0.94), run(2, 14, 0.95, 0.92),
            run(3, 16, 0.9, 0.9, reached=False)]
    out = summaries.onset_to_end(runs, ("recovery.test_acc_true_coarse",))
    m = out["measures"]["recovery.test_acc_true_coarse"]
    assert (out["seeds"], out["onset_epoch"], out["left_out_seeds"]) == ([0, 1, 2], [16, 18, 14],
                                                                        [3])
    assert m["change"] == pytest.approx([-0.01, -0.02, -0.03])
    assert m["change_spread"]["mean"] == pytest.approx(-0.02)
    assert m["change_spread"]["sd"] == pytest.approx(0.01)
    # t(0.975, 2) = 4.3027: half-width 4.3027 * 0.01 / sqrt(3).
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert m["change_t95"] == pytest.approx((-0.02 - half, -0.02 + half))
    runs[0]["history"].pop(1)
    with pytest.raises(ValueError, match="seed 0: no history entry at its terminal-phase onset"):
        summaries.onset_to_end(runs, ("recovery.test_acc_true_coarse",))


def test_a_run_name_holds_its_points_keys_and_reads_a_list_as_items() -> None:
    cfg = resolve("full", weight_decay=5e-3, seed=1, epochs=80, step_milestones=[0.15, 0.3])
    point = {"lr": 0.1, "weight_decay": 5e-3, "seed": 1, "epochs": 80,
             "step_milestones": [0.15, 0.3]}
    assert sweeps.run_name(cfg, point) == ("mapping=mod5_lr=0.1_weight_decay=0.005_seed=1_"
                                           "epochs=80_step_milestones=0.15-0.3")


def test_experiment_parameters_are_checked_against_the_notebook_before_any_work(
        tmp_path: Path) -> None:
    from nbutils.reproduce import run_experiments

    with pytest.raises(ValueError, match=r"no parameter \['weight_decay'\]; allowed: .*"
                                         r"weight_decays"):
        run_experiments(("12_collapse_strength",), out=tmp_path / "out",
                        publish_dir=tmp_path / "pub", parameters={"weight_decay": [5e-4]})
    with pytest.raises(ValueError, match="need exactly one notebook"):
        run_experiments(("07_grid", "12_collapse_strength"), out=tmp_path / "out",
                        publish_dir=tmp_path / "pub", parameters={"seeds": [0]})
    assert not (tmp_path / "out").exists()


def test_experiment_parameters_reach_papermill(tmp_path: Path, monkeypatch) -> None:
    from nbutils import reproduce

    seen = {}
    monkeypatch.setattr(reproduce, "run_notebook",
                        lambda src, dst, params: seen.update(params) or 0.0)
    reproduce.run_experiments(("12_collapse_strength",), out=tmp_path / "out", publish_dir=None,
                              parameters={"weight_decays": [5e-4, 5e-5]})
    assert seen == {"weight_decays": [5e-4, 5e-5]}


def test_cli_experiments_set_needs_one_notebook_and_reads_json() -> None:
    from nbutils.__main__ import build_parser, cmd_experiments, parse_set
    from nbutils.reproduce import notebook_parameter_names

    args = build_parser().parse_args(["experiments", "--set", "seeds=[0]"])
    with pytest.raises(SystemExit, match="name it with --only"):
        cmd_experiments(args)
    allowed = notebook_parameter_names("12_collapse_strength")
    assert parse_set(["weight_decays=[5e-4,5e-5]"], allowed) == {"weight_decays": [5e-4, 5e-5]}
    with pytest.raises(SystemExit, match="unknown parameter 'lrs'; allowed: profile"):
        parse_set(["lrs=[0.1]"], allowed)
