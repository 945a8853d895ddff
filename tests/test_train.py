"""Training: schedules, device/amp choice, a tiny end-to-end training with its artifacts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nbutils.config import resolve
from nbutils.data import stats_tensors, to_tensor
from nbutils.device import amp_dtype, select_device
from nbutils.features import extract
from nbutils.models import ResNet18
from nbutils.run_data import load_run_data
from nbutils.runs import checkpoint_path, load_json, load_torch
from nbutils.train import evaluate, load_model, lr_at, train_model


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "step"])
def test_schedules_decay(schedule: str) -> None:
    cfg = resolve("ci", schedule=schedule, lr=0.1)
    total = 1000
    lrs = [lr_at(s, total, cfg) for s in range(total)]
    assert max(lrs) == pytest.approx(0.1, rel=1e-3)
    assert lrs[-1] < 0.011 and all(lr > 0 for lr in lrs)


def test_onecycle_shape() -> None:
    cfg = resolve("ci", schedule="onecycle", lr=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1 / 25)
    assert lr_at(30, 100, cfg) == pytest.approx(0.1)
    assert lr_at(65, 100, cfg) == pytest.approx(0.05, rel=1e-3)


def test_step_schedule_values() -> None:
    cfg = resolve("ci", schedule="step", lr=0.1)
    assert [lr_at(s, 100, cfg) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_step_milestones_set_where_the_lr_drops() -> None:
    cfg = resolve("ci", schedule="step", lr=0.1, step_milestones=[0.3, 0.6])
    assert [lr_at(s, 100, cfg) for s in (0, 29, 30, 59, 60, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_amp_and_device_choice() -> None:
    cpu = torch.device("cpu")
    assert amp_dtype("off", cpu) is None
    assert amp_dtype("bf16", cpu) is torch.bfloat16
    assert select_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert select_device("auto") == cpu
        with pytest.raises(ValueError, match="device: 'cuda'"):
            select_device("cuda")


@pytest.mark.slow
def test_tiny_training_writes_checkpoints_and_log(tmp_path: Path, fake_cache: Path) -> None:
    cfg = resolve("ci", run_dir=str(tmp_path / "run"), data_root=str(fake_cache), width=4,
                  epochs=2, train_per_class=4, test_per_class=2, batch_size=16,
                  checkpoint_epochs=[0, 1, 2], amp="off")
    log = train_model(cfg, "coarse", progress=False)
    assert [row["epoch"] for row in log] == [1, 2]
    assert all(math.isfinite(row["train_loss"]) and 0 <= row["test_acc"] <= 1 for row in log)
    assert load_json(tmp_path / "run" / "coarse" / "log.json") == log
    first = load_torch(checkpoint_path(cfg, "coarse", 0))["model"]
    last = load_torch(checkpoint_path(cfg, "coarse", 2))["model"]
    assert first["head.weight"].shape == (5, 32)
    assert not torch.equal(first["head.weight"], last["head.weight"])
    base = train_model(cfg, "baseline", progress=False)
    assert load_torch(checkpoint_path(cfg, "baseline", 2))["model"]["head.weight"].shape == (10, 32)
    assert len(base) == 2


@pytest.mark.slow
def test_eval_every_skips_test_evaluations_but_not_checkpoints_or_the_end(
        tmp_path: Path, fake_cache: Path) -> None:
    cfg = resolve("ci", run_dir=str(tmp_path / "run"), data_root=str(fake_cache), width=2,
                  epochs=5, train_per_class=4, test_per_class=2, checkpoint_epochs=[0, 3],
                  train_baseline=False, amp="off", eval_every=2)
    log = train_model(cfg, "coarse", progress=False)
    assert [r["test_acc"] is not None for r in log] == [False, True, True, True, True]


@pytest.mark.slow
def test_clean_train_accuracy_is_logged_at_checkpoints_and_equals_an_eval_pass(
        tmp_path: Path, fake_cache: Path) -> None:
    cfg = resolve("ci", run_dir=str(tmp_path / "run"), data_root=str(fake_cache), width=2,
                  epochs=3, train_per_class=4, test_per_class=2, checkpoint_epochs=[0, 2],
                  train_baseline=False, amp="off", augment=False, clean_train_eval=True)
    log = train_model(cfg, "coarse", progress=False)
    assert ["clean_train_acc" in r for r in log] == [False, True, True]
    data = load_run_data(cfg)
    model = load_model(cfg, "coarse", 2, 5, torch.device("cpu"))
    images = to_tensor(data.train.images)
    labels = torch.from_numpy(data.labels("coarse", "train"))
    acc = evaluate(model, images, labels, stats_tensors("cifar10", "cpu"), 128, None)[1]
    assert log[1]["clean_train_acc"] == acc


@pytest.mark.slow
def test_without_augmentation_a_batch_is_the_images_themselves(
        tmp_path: Path, fake_cache: Path, monkeypatch) -> None:
    import nbutils.train as train

    def refuse(*args, **kwargs):
        raise AssertionError("augment called with augment=False")
    monkeypatch.setattr(train, "augment", refuse)
    cfg = resolve("ci", run_dir=str(tmp_path / "run"), data_root=str(fake_cache), width=2,
                  epochs=1, train_per_class=4, test_per_class=2, train_baseline=False,
                  amp="off", augment=False)
    assert len(train_model(cfg, "coarse", progress=False)) == 1


def test_features_and_test_accuracy_do_not_depend_on_the_eval_batch_size() -> None:
    torch.manual_seed(0)
    model = ResNet18(num_classes=5, width=4).to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(300) % 5
    stats = stats_tensors("cifar10", "cpu")
    feats, preds = extract(model, images, stats, 1024)
    for batch in (7, 128):
        other, other_preds = extract(model, images, stats, batch)
        assert abs(other - feats).max() < 1e-5 and (other_preds == preds).all()
        assert evaluate(model, images, labels, stats, batch, None)[1] == \
            evaluate(model, images, labels, stats, 1024, None)[1]
    assert [resolve(p).eval_batch_size for p in ("ci", "cpu", "tpt", "exp", "paper")] == \
        [128, 128, 128, 128, 1024]
