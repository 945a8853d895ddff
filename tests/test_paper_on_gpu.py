"""The planner of scripts/paper_on_gpu.py: costs, the standing order, returns, carried units."""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from nbutils import runs
from nbutils import train as train_mod
from nbutils.train import train_model

REPO = Path(__file__).parents[1]
SCRIPT = REPO / "scripts" / "paper_on_gpu.py"
DEVICE_LOGS = REPO / "figures" / "paper" / "logs"
MIB = 2**20


@pytest.fixture(scope="module")
def script():
    """The script as a module."""
    spec = importlib.util.spec_from_file_location("paper_on_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def state_with(**units) -> dict:
    """A state file whose units (key=(epochs_done, finished)) are as given."""
    return {"epochs": 200, "units": {k.replace("_", "-"): {"epochs_done": d, "finished": f}
                                     for k, (d, f) in units.items()}}


# --------------------------------------------------------------------------- costs


def test_calibration_from_the_committed_run(script) -> None:
    """The committed run planned 5.8 s per epoch and took 4.0 s: the allowance drops to ~0."""
    pair = runs.load_json(DEVICE_LOGS / "device" / "throughput_probe_pair1.json")
    rate = pair["img_per_s"]["ours"]  # 11,633 img/s per training, two at once
    assert script.planned_epoch_s(rate, 1.5) == pytest.approx(5.8, abs=0.01)
    logged = statistics.median(r["seconds"] for r in runs.load_json(
        DEVICE_LOGS / "coarse" / "log.json")[1:])
    assert logged == pytest.approx(4.0, abs=0.1)
    overhead = script.calibrated_overhead(logged, rate)
    assert 0 <= overhead < 0.1
    # Its 66 epochs took 285 s of wall time after start-up: 4.32 s each.
    assert script.planned_epoch_s(rate, overhead) == pytest.approx(285 / 66, abs=0.1)
    assert script.calibrated_overhead(6.0, rate) == pytest.approx(6.3 - 50_000 / rate)


def test_probes_give_aggregate_rates_by_concurrency(script) -> None:
    single = runs.load_json(DEVICE_LOGS / "device" / "throughput_probe_single.json")
    records = [single, {"concurrent": 2, "aggregate_img_per_s": 60_000.0},
               {"concurrent": 2, "aggregate_img_per_s": 58_000.0},
               {"concurrent": 4, "img_per_s": {"ours": 20_000.0}}]
    assert script.read_probes(records) == {1: pytest.approx(13961.5, abs=1), 2: 58_000.0,
                                           4: 80_000.0}


def test_epoch_costs_prefer_measured_epochs_of_the_same_compile_mode(script) -> None:
    probes = {1: 33_000.0, 2: 60_000.0, 4: 80_000.0}
    costs = script.epoch_costs(probes, [], "reduce-overhead", 2)
    assert costs == {1: pytest.approx(50_000 / 33_000), 2: pytest.approx(50_000 / 30_000)}
    measured = [{"concurrent": 2, "compile": "reduce-overhead", "epoch_s": 2.0},
                {"concurrent": 1, "compile": "off", "epoch_s": 4.0}]
    costs = script.epoch_costs(probes, measured, "reduce-overhead", 4)
    # n=2 was measured: 2.0 s logged + checkpoint writes; it ran 0.63 s above its probe, which
    # the unmeasured counts get as their allowance.
    assert costs[2] == pytest.approx(2.3)
    extra = 2.3 - 50_000 / 30_000
    assert costs[1] == pytest.approx(50_000 / 33_000 + extra)
    assert costs[4] == pytest.approx(50_000 / 20_000 + extra)


# --------------------------------------------------------------------------- the standing order


def test_pending_follows_the_standing_order(script) -> None:
    assert [(u.key, d) for u, d in script.pending({})][:3] == [
        ("s0-coarse", 0), ("s0-baseline", 0), ("s1-coarse", 0)]
    assert len(script.pending({})) == 6
    state = state_with(s0_coarse=(200, True), s0_baseline=(120, False))
    todo = script.pending(state)
    assert [(u.key, u.step, d) for u, d in todo][:2] == [("s0-baseline", 2, 120),
                                                        ("s1-coarse", 3, 0)]
    assert script.pending(state_with(**{f"s{s}_{m}": (200, True) for s in range(3)
                                        for m in ("coarse", "baseline")})) == []


COSTS = {1: 50_000 / 33_000, 2: 50_000 / 30_000}  # 1.52 s alone, 1.67 s each two at once


def test_two_at_once_when_both_finish(script) -> None:
    plan = script.choose(script.pending({}), 200, 400.0, COSTS, 60.0)
    assert plan.concurrent == 2 and plan.finishes == ["s0-coarse", "s0-baseline"]
    assert plan.end == {"s0-coarse": 200, "s0-baseline": 200}


def test_alone_when_only_that_finishes_step_one(script) -> None:
    # 310 s: 204 epochs alone, 186 each as a pair.
    plan = script.choose(script.pending({}), 200, 370.0, COSTS, 60.0)
    assert (plan.concurrent, plan.finishes, plan.end) == (1, ["s0-coarse"], {"s0-coarse": 200})


def test_most_epochs_when_nothing_finishes(script) -> None:
    # 271 s: 178 alone; 162 each as a pair, 324 in all even with two units to carry.
    plan = script.choose(script.pending({}), 200, 331.0, COSTS, 60.0)
    assert plan.concurrent == 2 and plan.finishes == []
    assert plan.end == {"s0-coarse": 162, "s0-baseline": 162}


def test_a_carried_unit_continues_where_it_stopped(script) -> None:
    todo = script.pending(state_with(s0_coarse=(161, False), s0_baseline=(161, False)))
    plan = script.choose(todo, 200, 200.0, COSTS, 60.0)
    assert plan.start == {"s0-coarse": 161, "s0-baseline": 161}
    assert plan.finishes == ["s0-coarse", "s0-baseline"]


def test_cutting_a_unit_costs_its_carry(script) -> None:
    # A third unit would get 12 epochs, less than carrying it costs (30 s: 25 epochs).
    todo = script.pending(state_with(s0_coarse=(190, False), s0_baseline=(190, False)))
    costs = {2: 1.0, 3: 1.2}
    plan = script.choose(todo, 200, 25.0, costs, 10.0)
    assert plan.concurrent == 2
    assert script.choose(todo, 200, 25.0, {3: 1.2}, 10.0).concurrent == 3


def test_nothing_when_no_epoch_fits_or_nothing_is_left(script) -> None:
    assert script.choose(script.pending({}), 200, 61.0, COSTS, 60.0) is None
    assert script.choose([], 200, 1e6, COSTS, 60.0) is None


def test_state_records_progress_and_measured_epochs(script) -> None:
    unit = script.ORDER[0]
    log = [{"epoch": e, "seconds": s} for e, s in ((1, 44.0), (2, 1.5), (3, 1.7), (4, 1.6))]
    before = state_with(s0_coarse=(0, False))
    after = script.record(before, unit, log, 200, 0, 2, "reduce-overhead", False)
    assert before["units"]["s0-coarse"]["epochs_done"] == 0
    assert after["units"]["s0-coarse"] == {"seed": 0, "model": "coarse", "step": 1,
                                           "epochs_done": 4, "finished": False,
                                           "analysed": False}
    assert after["measured"] == [{"unit": "s0-coarse", "concurrent": 2,
                                  "compile": "reduce-overhead", "epochs": [1, 4],
                                  "epoch_s": 1.6}]
    with pytest.raises(ValueError, match="^--epochs: the state file's runs train for 200"):
        script.check_state(after, 100)


def test_returns_are_split_into_calls_of_eight_files_and_64_mib(script) -> None:
    parts = [("s0-coarse.manifest.json", 2000)] + [
        (f"s0-coarse.part{i:03d}", 15 * MIB) for i in range(6)]
    batches = script.return_batches(parts, first_files=3, first_bytes=10 * MIB)
    assert batches == [["s0-coarse.manifest.json", "s0-coarse.part000", "s0-coarse.part001",
                        "s0-coarse.part002"],
                       ["s0-coarse.part003", "s0-coarse.part004", "s0-coarse.part005"]]
    many = [(f"f{i}", 1) for i in range(20)]
    assert [len(b) for b in script.return_batches(many, 0, 0)] == [8, 8, 4]
    with pytest.raises(ValueError, match="cannot come back in one call"):
        script.return_batches([("big", 65 * MIB)], 0, 0)


def test_checkpoints_and_bad_flags(script) -> None:
    assert script.checkpoints(200) == [0, 1, 5, 50, 100, 150, 200]
    with pytest.raises(SystemExit):
        script.parse_args(["--data-root", "d", "--out", "o", "--budget", "0"])
    with pytest.raises(SystemExit):
        script.parse_args(["--data-root", "d", "--out", "o", "--budget", "9", "--epochs", "0"])


# --------------------------------------------------------------------------- on the CPU


TINY = ["--profile", "ci", "--epochs", "4", "--compile-mode", "off", "--analysis-reserve", "0",
        "--set", "width=2", "--set", "train_per_class=4", "--set", "test_per_class=2",
        "--set", "batch_size=16", "--set", "amp=\"off\"", "--set", "device=\"cpu\"",
        "--set", "n_init=2"]


@pytest.mark.slow
def test_a_unit_cut_off_is_carried_and_finished_in_the_next_session(
        script, tmp_path: Path, fake_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    common = ["--data-root", str(fake_cache), "--max-concurrent", "1", "--carry-checkpoints",
              *TINY]
    # Session 1, cut after 2 of 4 epochs (a clock that jumps past the deadline).
    first = script.parse_args(["--out", str(tmp_path / "out1"), "--stage", str(tmp_path / "st"),
                               "--runs", str(tmp_path / "runs1"), "--budget", "600", *common])
    unit = script.ORDER[0]
    cfg = script.run_config(first, 0, script.unit_dir(first, unit))
    runs.create_run(cfg)
    clock = itertools.chain([0.0, 0.0], itertools.repeat(2e9))
    monkeypatch.setattr(train_mod, "_now", lambda: next(clock))
    log = train_model(cfg, "coarse", progress=False, deadline=1e9)
    state = script.record({"epochs": 4}, unit, log, 4, 0, 1, "off", False)
    (tmp_path / "out1").mkdir()
    script.send_back(first, state, [unit])
    assert {p.name for p in (tmp_path / "out1").iterdir()} >= {
        "state.json", "runs.tar", "s0-coarse.manifest.json", "s0-coarse.part000"}
    # Session 2 on a fresh machine: the returned files are its carry-in.
    carried = tmp_path / "carried"
    shutil.copytree(tmp_path / "out1", carried)
    script.main(["--out", str(tmp_path / "out2"), "--stage", str(tmp_path / "st2"),
                 "--runs", str(tmp_path / "runs2"), "--budget", "600",
                 "--state", str(carried / "state.json"), "--carry-in", str(carried), *common])
    final = json.loads((tmp_path / "out2" / "state.json").read_text())
    assert final["units"]["s0-coarse"] == {"seed": 0, "model": "coarse", "step": 1,
                                           "epochs_done": 4, "finished": True, "analysed": True}
    assert [m["epochs"] for m in final["measured"]] == [[1, 2], [3, 4]]
    whole = tmp_path / "whole"
    monkeypatch.setattr(train_mod, "_now", lambda: 0.0)
    full = train_model(script.run_config(first, 0, whole), "coarse", progress=False)
    got = runs.load_json(tmp_path / "runs2" / "paper-s0-coarse" / "coarse" / "log.json")
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in got] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in full]
    with tarfile.open(tmp_path / "out2" / "runs.tar") as tar:
        names = tar.getnames()
    assert "paper-s0-coarse-only/results.json" in names
    assert "paper-s0-coarse/coarse/log.json" in names
    assert not list((tmp_path / "out2").glob("*.part*"))  # nothing left to carry


# --------------------------------------------------------------------------- concurrent probes


BENCH = REPO / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    """benchmarks/train_throughput.py as a module (it imports its neighbour common.py)."""
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("train_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_together_counts_images_over_the_span_of_all_processes(bench) -> None:
    # Two processes, two rounds: 100 images each; the second round overlaps less.
    results = [{"windows": {"ours": [[100, 0.0, 1.0], [100, 10.0, 11.0]]}},
               {"windows": {"ours": [[100, 0.5, 1.5], [100, 10.0, 13.0]]}}]
    assert bench.together(results, "ours") == pytest.approx(200 / 1.5)
    args = bench.parse_args(["--concurrent", "3", "--synthetic", "64", "--compile",
                             "--threads", "1"])
    argv = bench.child_argv(args)
    assert "--concurrent" not in argv and "--json" not in argv
    assert bench.parse_args(argv).compile and bench.parse_args(argv).synthetic == 64
    with pytest.raises(SystemExit):
        bench.parse_args(["--concurrent", "0"])


@pytest.mark.slow
def test_the_concurrent_benchmark_writes_a_probe_the_planner_reads(script, tmp_path) -> None:
    out = tmp_path / "c2.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--concurrent", "2", "--threads", "1", "--width", "2",
         "--steps", "2", "--warmup", "1", "--rounds", "1", "--synthetic", "256",
         "--batch-size", "16", "--loops", "ours", "--amp", "off", "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=True)
    last = done.stdout.strip().splitlines()[-1]
    probe = json.loads(out.read_text())
    assert probe["concurrent"] == 2 and len(probe["per_process"]["ours"]) == 2
    # Over the span of both, together is at most the sum of each one's own rate.
    assert probe["aggregate_img_per_s"] <= sum(probe["per_process"]["ours"]) * (1 + 1e-9)
    ratio = probe["aggregate_img_per_s"] / probe["alone_img_per_s"]["ours"]
    assert last == f"ratio {ratio:.3f}"
    assert script.read_probes([probe]) == {2: probe["aggregate_img_per_s"]}


# --------------------------------------------------------------------------- the captured step


def test_crop_flip_from_drawn_numbers_equals_augment(bench) -> None:
    from nbutils.data import augment

    images = torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8)
    a = augment(images, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    b = bench.crop_flip(images, *bench.draw(len(images), gen))
    assert torch.equal(a, b)
    # The generator ends where augment leaves it, so the next batch draws the same too.
    ref = torch.Generator().manual_seed(5)
    augment(images, ref)
    assert torch.equal(torch.rand(4, generator=ref), torch.rand(4, generator=gen))


def test_captured_epoch_trains_as_train_epoch(bench) -> None:
    from nbutils.config import resolve
    from nbutils.data import stats_tensors
    from nbutils.distributed import Dist
    from nbutils.train import build_model, make_optimizer, train_epoch

    cfg = resolve("ci", width=2, batch_size=16, amp="off", device="cpu", epochs=2)
    cpu = torch.device("cpu")
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(40) % 5
    stats = stats_tensors("cifar10", cpu)
    ref = build_model(cfg, 5, cpu)
    opt = make_optimizer(cfg, ref)
    train_epoch(ref, opt, images, labels, cfg, 1, stats, None, Dist(), False)
    model = build_model(cfg, 5, cpu)
    ctx = dict(cfg=cfg, device=cpu, batch=16, dtype=None, y=labels)
    bench.captured_epoch(bench.CapturedStep(model, images, stats), make_optimizer(cfg, model),
                         ctx, 1, 40)
    a, b = ref.state_dict(), model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], build_model(cfg, 5, cpu).state_dict()["head.weight"])
