"""Training: SGD with a decaying schedule on device-resident data, checkpoints and exact resume."""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from nbutils import checks
from nbutils.config import TRAINING_KEYS, RunConfig, diff
from nbutils.data import (
    augment,
    normalize,
    stats_tensors,
    to_tensor,
)
from nbutils.device import amp_dtype, autocast, device_name, environment
from nbutils.distributed import Dist, preflight
from nbutils.models import ResNet18
from nbutils.progress import tqdm
from nbutils.run_data import RunData, load_run_data
from nbutils.runs import (
    ArtifactError,
    checkpoint_path,
    clear_temporaries,
    load_json,
    load_torch,
    model_dir,
    save_json,
    save_torch,
)


def lr_at(step: int, total: int, cfg: RunConfig) -> float:
    """Learning rate at optimiser step `step` of `total` (a pure function: resume is exact)."""
    t = step / max(total, 1)
    if cfg.schedule == "cosine":
        warm = min(1.0, (step + 1) / max(1, total // 100))
        return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** sum(t >= m for m in cfg.step_milestones)
    # One-cycle (as torch's OneCycleLR): cosine warm-up over 30% from lr/25, then cosine to ~0.
    peak, start, end = cfg.lr, cfg.lr / 25, cfg.lr / 25e4
    if t < 0.3:
        return start + (peak - start) * 0.5 * (1 - math.cos(math.pi * t / 0.3))
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (t - 0.3) / 0.7))


def build_model(cfg: RunConfig, num_classes: int, device: torch.device) -> ResNet18:
    """The seeded ResNet-18 in channels_last on `device`."""
    torch.manual_seed(cfg.seed)
    return ResNet18(num_classes, cfg.width).to(device, memory_format=torch.channels_last)


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.SGD:
    """SGD with momentum and weight decay (lr is set every step by the schedule)."""
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, stats: tuple,
    batch_size: int, dtype: torch.dtype | None, ddp: Dist | None = None,
) -> tuple[float, float]:
    """(mean loss, accuracy) in eval mode without augmentation; shards over ranks."""
    ddp = ddp or Dist()
    model.eval()
    mean, std = stats
    loss = torch.zeros((), dtype=torch.float64, device=images.device)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    for start in range(ddp.rank * batch_size, len(labels), batch_size * ddp.world):
        x = normalize(images[start:start + batch_size], mean, std)
        y = labels[start:start + batch_size]
        with autocast(images.device, dtype):
            logits = model(x.contiguous(memory_format=torch.channels_last)).float()
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    totals = torch.stack([loss, correct.double()])
    if ddp.world > 1:
        dist.all_reduce(totals)
    return float(totals[0]) / len(labels), float(totals[1]) / len(labels)


def epoch_generator(cfg: RunConfig, epoch: int, device: torch.device) -> torch.Generator:
    """RNG for one epoch's order and augmentation, derived from (seed, epoch) for exact resume."""
    return torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + epoch)


def batches_per_epoch(n: int, cfg: RunConfig) -> int:
    """Optimiser steps in one epoch over `n` samples (the last batch may be smaller)."""
    return math.ceil(n / cfg.batch_size)


def train_epoch(
    model: torch.nn.Module, opt: torch.optim.Optimizer, images: torch.Tensor,
    labels: torch.Tensor, cfg: RunConfig, epoch: int, stats: tuple, dtype: torch.dtype | None,
    ddp: Dist, progress: bool,
) -> tuple[float, float]:
    """One epoch over this rank's shard; returns global (mean loss, accuracy) under augmentation."""
    model.train()
    dev = images.device
    gen = epoch_generator(cfg, epoch, dev)
    order = torch.randperm(len(labels), generator=gen, device=dev)[ddp.rank::ddp.world]
    per_rank = cfg.batch_size // ddp.world
    steps = batches_per_epoch(len(labels), cfg)
    total = steps * cfg.epochs
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    bar = tqdm(range(steps), desc=f"epoch {epoch}", leave=False, disable=not progress)
    for i in bar:
        idx = order[i * per_rank:(i + 1) * per_rank]
        x = augment(images[idx], gen) if cfg.augment else images[idx]
        x = normalize(x, *stats).contiguous(memory_format=torch.channels_last)
        y = labels[idx]
        for group in opt.param_groups:
            group["lr"] = lr_at((epoch - 1) * steps + i, total, cfg)
        with autocast(dev, dtype):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Accumulated on the device: no host sync inside the step.
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
    totals = torch.stack([loss_sum, correct.double()])
    if ddp.world > 1:
        dist.all_reduce(totals)
    return float(totals[0]) / len(labels), float(totals[1]) / len(labels)


def rng_state() -> dict:
    """Every global RNG's state (training draws from per-epoch generators; this is for the rest)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back the global RNG states saved by `rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    # A run resumed on a machine with other GPUs keeps their fresh states.
    if len(state.get("cuda", ())) == torch.cuda.device_count() > 0:
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_state(cfg: RunConfig, epoch: int, model: torch.nn.Module,
                 opt: torch.optim.Optimizer, log: list[dict]) -> dict:
    """What `last.pt` holds: everything an exact continuation after `epoch` needs."""
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
            "log": log, "rng": rng_state(), "config": cfg.to_dict()}


def restore_resume_state(path: Path, cfg: RunConfig, model: torch.nn.Module,
            opt: torch.optim.Optimizer) -> tuple[int, list]:
    """Load the resume state; returns (completed epochs, log so far).

    A damaged `last.pt` is an error, not a silent restart: its epochs would be lost unnoticed.
    """
    remedy = ("it cannot be resumed from: delete it (training of this model restarts at "
              "epoch 0) or run without resuming (--no-resume, resume=False)")
    state = load_torch(path, remedy=remedy)
    missing = {"model", "optimizer", "epoch", "log"} - set(state)
    if missing:
        raise ArtifactError(f"{path} lacks {sorted(missing)}; {remedy}")
    # Files from before the config was stored in last.pt have none; create_run guards those.
    changes = diff(state["config"], cfg.to_dict(), TRAINING_KEYS) if "config" in state else []
    if changes:
        raise ArtifactError(
            f"{path} was trained with other values ({'; '.join(changes)}); {remedy}"
        )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if "rng" in state:
        set_rng_state(state["rng"])
    return state["epoch"], state["log"]


DEADLINE_ENV = "NBUTILS_DEADLINE"
# The clock the deadline is read against (a name of its own so that tests can move time).
_now = time.time


def _deadline_error(name: str, value: object) -> ValueError:
    """The error for a deadline that is not a time."""
    return ValueError(f"{name}: must be a time in Unix seconds (e.g. $(date -d '+8 min' +%s)) "
                      f"or None, got {value!r}")


def check_deadline(deadline: object, name: str = "deadline") -> float | None:
    """`deadline` (Unix seconds) as a float, None for none; ValueError naming `name`."""
    if deadline is None:
        return None
    ok = isinstance(deadline, (int, float)) and not isinstance(deadline, bool)
    if not ok or not math.isfinite(deadline) or deadline <= 0:
        raise _deadline_error(name, deadline)
    return float(deadline)


def deadline_from_env() -> float | None:
    """The deadline in $NBUTILS_DEADLINE (Unix seconds), None when unset or empty."""
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return None
    try:
        return check_deadline(float(text), DEADLINE_ENV)
    except ValueError:
        # The message quotes the variable's text, not the float it became.
        raise _deadline_error(DEADLINE_ENV, text) from None


def next_epoch_estimate(measured: list[float], log: list[dict]) -> float:
    """Seconds the next epoch should take: the slowest of this process's last three epochs.

    The first epoch of a process is left out once later ones exist (it holds compilation and
    warm-up); before any epoch here, the slowest of the last three logged ones (a resumed run's
    earlier loan), else 0: a fresh run always starts its first epoch.
    """
    recent = measured[1:][-3:] or measured[-3:]
    if recent:
        return max(recent)
    # A checkpoint epoch's clean train pass is logged apart from its `seconds`.
    logged = [row["seconds"] + row.get("clean_eval_seconds", 0.0) for row in log[-3:]
              if row.get("seconds") is not None]
    return max(logged, default=0.0)


def stop_for_deadline(deadline: float | None, estimate: float, ddp: Dist,
                      device: torch.device) -> bool:
    """Whether the next epoch would end after `deadline`; every rank takes rank 0's answer."""
    if deadline is None:
        return False
    stop = _now() + estimate > deadline
    if ddp.world > 1:
        # Ranks read their own clocks; one stopping alone would leave the others waiting.
        flag = torch.tensor([int(stop)], device=device)
        dist.broadcast(flag, 0)
        stop = bool(flag.item())
    return stop


def precision_name(dtype: torch.dtype | None) -> str:
    """'bfloat16' for bf16 autocast, 'off' for float32."""
    return str(dtype).replace("torch.", "") if dtype else "off"


def train_meta(out: Path, start: int, dtype: torch.dtype | None, device: torch.device,
               ddp: Dist, data: RunData, model_name: str, n_train: int,
               n_test: int) -> dict:
    """train_meta.json, with one `segments` entry per process that trained this model.

    A model resumed in another precision than it started in is refused: its numbers would
    belong to neither (amp="auto" resolves by the machine, so a move can change it silently).
    """
    amp, env = precision_name(dtype), environment(device)
    path = out / "train_meta.json"
    earlier = load_json(path) if start > 0 and path.is_file() else {}
    if earlier and earlier.get("amp") != amp:
        raise ArtifactError(
            f"{out.name}: trained up to epoch {start} with amp={earlier.get('amp')!r} but would "
            f"resume with {amp!r} on this machine ({env['cpu_instruction_set']}); resume on a "
            f"machine of the first kind, set amp to match (amp='bf16' or 'off'), or retrain with "
            f"--no-resume")
    segments = earlier.get("segments") or ([{"from_epoch": 0, "environment":
                                             earlier.get("environment")}] if earlier else [])
    return {"device": device_name(device), "amp": amp, "world_size": ddp.world,
            "num_classes": data.num_classes(model_name), "train_size": n_train,
            "test_size": n_test, "environment": env,
            "segments": [*segments, {"from_epoch": start, "environment": env}]}


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of every parameter and buffer: equal digests at an epoch
    mean two runs followed the same trajectory bit for bit up to it."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def evaluated(cfg: RunConfig, epoch: int) -> bool:
    """Whether the test split is evaluated after `epoch`: every `eval_every`, at every
    checkpoint and at the end (a short epoch on a small subset would otherwise be mostly
    evaluation of the full test set)."""
    return epoch % cfg.eval_every == 0 or epoch == cfg.epochs or epoch in cfg.checkpoint_epochs


def train_model(
    cfg: RunConfig, model_name: str, data: RunData | None = None, resume: bool = True,
    progress: bool = True, deadline: float | None = None,
) -> list[dict]:
    """Train `model_name` ('coarse' or 'baseline'), checkpointing; returns the per-epoch log.

    With `resume`, a run killed at any point continues from its last complete epoch and ends
    with the weights an uninterrupted run would have (exactly, on the CPU). With a `deadline`
    (Unix seconds; by default $NBUTILS_DEADLINE), training stops at the epoch boundary where
    the next epoch, estimated from the measured ones, would end after it: last.pt and log.json
    then hold the completed epochs, and resuming continues exactly.
    """
    checks.flag("resume", resume)
    deadline = check_deadline(deadline) if deadline is not None else deadline_from_env()
    device, ddp = preflight(cfg)
    data = data or load_run_data(cfg)
    dtype = amp_dtype(cfg.amp, device)
    out = model_dir(cfg, model_name)
    stats = stats_tensors(cfg.dataset, device)
    x_tr, x_te = to_tensor(data.train.images, device), to_tensor(data.test.images, device)
    y_tr = torch.from_numpy(data.labels(model_name, "train")).to(device)
    y_te = torch.from_numpy(data.labels(model_name, "test")).to(device)
    model = build_model(cfg, data.num_classes(model_name), device)
    opt = make_optimizer(cfg, model)
    start, log = 0, []
    last = out / "last.pt"
    if ddp.main:
        clear_temporaries(out)
    if resume and last.is_file():
        start, log = restore_resume_state(last, cfg, model, opt)
        if ddp.main:
            print(f"[nbutils] {model_name}: resuming after epoch {start} of {cfg.epochs} "
                  f"from {last}", file=sys.stderr, flush=True)
            # A kill between last.pt and log.json of the final epoch leaves no loop to write it.
            save_json(out / "log.json", log)
    elif ddp.main:
        # Features of an earlier training of this model would otherwise be kept as current.
        shutil.rmtree(out / "features", ignore_errors=True)
        save_torch(checkpoint_path(cfg, model_name, 0), {"model": model.state_dict(), "epoch": 0})
    net = model
    if ddp.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        net = torch.compile(net, mode=cfg.compile_mode)
    steps = batches_per_epoch(len(y_tr), cfg)
    if ddp.main:
        save_json(out / "train_meta.json",
                  train_meta(out, start, dtype, device, ddp, data, model_name, len(y_tr),
                             len(y_te)))
    bar = tqdm(range(start + 1, cfg.epochs + 1), desc=model_name, disable=not progress,
               initial=start, total=cfg.epochs, unit="epoch")
    measured: list[float] = []
    for epoch in bar:
        estimate = next_epoch_estimate(measured, log)
        if stop_for_deadline(deadline, estimate, ddp, device):
            if ddp.main:
                print(f"[nbutils] {model_name}: stopped after epoch {epoch - 1} of {cfg.epochs}: "
                      f"the next (about {estimate:.1f} s) would end after the deadline "
                      f"({deadline - _now():.1f} s left); resuming continues from {last}",
                      file=sys.stderr, flush=True)
            break
        t0 = time.perf_counter()
        tr_loss, tr_acc = train_epoch(net, opt, x_tr, y_tr, cfg, epoch, stats, dtype, ddp, progress)
        if ddp.world > 1:
            # Rank 0's BN statistics are the ones saved; other ranks' drifted in their last steps.
            for buf in model.buffers():
                dist.broadcast(buf, 0)
        # The bare module: DDP's forward syncs buffers, and ranks hold unequal eval shards.
        te_loss, te_acc = None, None
        if evaluated(cfg, epoch):
            te_loss, te_acc = evaluate(model, x_te, y_te, stats, cfg.eval_batch_size, dtype, ddp)
            bar.set_postfix(train_acc=f"{tr_acc:.3f}", test_acc=f"{te_acc:.3f}", refresh=False)
        seconds = time.perf_counter() - t0
        extra = {}
        if cfg.clean_train_eval and epoch in cfg.checkpoint_epochs:
            t1 = time.perf_counter()
            _, acc = evaluate(model, x_tr, y_tr, stats, cfg.eval_batch_size, dtype, ddp)
            extra = {"clean_train_acc": acc, "clean_eval_seconds": time.perf_counter() - t1}
        if epoch in cfg.checkpoint_epochs:
            extra["weights_sha256"] = weights_digest(model)
        log.append(dict(
            epoch=epoch, lr=lr_at(epoch * steps - 1, steps * cfg.epochs, cfg),
            train_loss=tr_loss, train_acc=tr_acc, test_loss=te_loss, test_acc=te_acc,
            seconds=seconds, **extra,
        ))
        if ddp.main:
            if epoch in cfg.checkpoint_epochs:
                save_torch(checkpoint_path(cfg, model_name, epoch),
                           {"model": model.state_dict(), "epoch": epoch})
            save_torch(last, resume_state(cfg, epoch, model, opt, log))
            save_json(out / "log.json", log)
        if ddp.world > 1:
            dist.barrier()
        # The whole epoch, checkpoint writes included: what the deadline has to hold.
        measured.append(time.perf_counter() - t0)
    return log


def load_model(cfg: RunConfig, model_name: str, epoch: int, num_classes: int,
               device: torch.device) -> ResNet18:
    """A model of the run with the weights of its checkpoint at `epoch`, in eval mode."""
    model = ResNet18(num_classes, cfg.width)
    model.load_state_dict(load_torch(checkpoint_path(cfg, model_name, epoch))["model"])
    return model.to(device, memory_format=torch.channels_last).eval()
