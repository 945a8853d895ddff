"""What a run will cost on this machine, from a few timed training steps, before any work.

`make reproduce` with no profile runs `paper` (ResNet-18 w=64, 200 epochs): minutes on a GPU,
a day or more on a laptop's CPU. The batch runner measures a few real steps of the run's own
model first, prints the estimate beside the cheaper profiles, and stops unless confirmed when
the estimate passes a limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nbutils.config import RunConfig
from nbutils.data import normalize, stats_tensors
from nbutils.device import amp_dtype, autocast, device_name, select_device
from nbutils.train import build_model, make_optimizer

LIMIT_HOURS = 2.0
# Eval-mode feature extraction costs about a third of a training step per image (no backward).
FORWARD_SHARE = 1 / 3


class CostTooHigh(ValueError):
    """The estimated cost passes the limit and the run was not confirmed."""


@dataclass
class Estimate:
    """Estimated wall time of one run: training and feature extraction."""

    profile: str
    device: str
    step_seconds: float
    train_steps: int
    forward_batches: int

    @property
    def seconds(self) -> float:
        """Training plus feature extraction, in seconds (the rest of the analysis is minor)."""
        return self.step_seconds * (self.train_steps + FORWARD_SHARE * self.forward_batches)


def step_seconds(cfg: RunConfig, steps: int = 3, max_seconds: float = 5.0) -> float:
    """Seconds per training step of the run's model and batch on its device (after a warm-up).

    Timing stops after `steps` steps or once `max_seconds` have passed, whichever comes first
    (at least one step), so that a model far too large for the device (the `paper` profile on
    a laptop CPU: seconds per step) is priced in seconds rather than in a minute.
    """
    device = select_device(cfg.device)
    dtype = amp_dtype(cfg.amp, device)
    model = build_model(cfg, 10, device)
    opt = make_optimizer(cfg, model)
    gen = torch.Generator(device).manual_seed(0)
    images = torch.randint(0, 256, (cfg.batch_size, 3, 32, 32), dtype=torch.uint8,
                           device=device, generator=gen)
    labels = torch.randint(0, 10, (cfg.batch_size,), device=device, generator=gen)
    x = normalize(images, *stats_tensors(cfg.dataset, device))
    x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        """One forward, backward and optimiser step, finished on the device."""
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # The first steps of a new shape build kernels (oneDNN, cuDNN) and the optimiser's state:
    # not part of the rate. A first step slower than the whole budget makes that build cost
    # minor, so then one warm-up step is enough.
    t0 = time.perf_counter()
    step()
    if time.perf_counter() - t0 < max_seconds:
        step()
    t0 = time.perf_counter()
    done = 0
    while done < steps and (done == 0 or time.perf_counter() - t0 < max_seconds):
        step()
        done += 1
    return (time.perf_counter() - t0) / done


def estimate(cfg: RunConfig, train_size: int, test_size: int) -> Estimate:
    """The run's estimated cost on this machine, from timed steps of its own model."""
    per_epoch = math.ceil(train_size / cfg.batch_size)
    models = len(cfg.models)
    batches = math.ceil((train_size + test_size) / cfg.batch_size)
    return Estimate(cfg.profile, device_name(select_device(cfg.device)), step_seconds(cfg),
                    per_epoch * cfg.epochs * models,
                    batches * len(cfg.checkpoint_epochs) * models)


def duration(seconds: float) -> str:
    """'3 min', '2.4 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(est: Estimate) -> str:
    """One line: the estimate and what it rests on."""
    return (f"profile {est.profile} on {est.device}: about {duration(est.seconds)} "
            f"({est.train_steps:,} training steps at {est.step_seconds:.3f} s/step, measured "
            f"here, plus feature extraction)")


def check(est: Estimate, cheaper: list[Estimate], confirmed: bool,
          limit_hours: float = LIMIT_HOURS) -> str:
    """The message to print; raises CostTooHigh past the limit unless `confirmed`."""
    lines = [f"[nbutils] estimated cost: {describe(est)}"]
    lines += [f"[nbutils]   cheaper: make reproduce PROFILE={c.profile}  "
              f"(about {duration(c.seconds)} here)" for c in cheaper]
    text = "\n".join(lines)
    if est.seconds > limit_hours * 3600 and not confirmed:
        raise CostTooHigh(
            f"{text}\nthe estimate passes {limit_hours:g} h on this machine: run it anyway with "
            f"`make reproduce PROFILE={est.profile} YES=1` (python -m nbutils reproduce --yes)"
        )
    return text
