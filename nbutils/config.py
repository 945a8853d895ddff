"""Profiles (docs/protocol.md, section 7) and the validated configuration of one run."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbutils import checks
from nbutils.checks import FEATURE_NORMS
from nbutils.data import DATASETS, NUM_FINE, TRAIN_PER_CLASS, coarse_mapping
from nbutils.paths import resolve_run_dir

SCHEDULES = ("onecycle", "cosine", "step")
FEATURE_EPOCHS = ("all", "phase")
AMP_MODES = ("auto", "bf16", "off")
DEVICES = ("auto", "cpu", "cuda")
# reduce-overhead replays the step as CUDA graphs: 2.4x our eager loop on an H200 at w=64.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")
# numpy's legacy seeding (scikit-learn's random_state) takes 32-bit seeds.
MAX_SEED = 2**32 - 1


@dataclass
class RunConfig:
    """Every choice of one run; each field is a notebook / CLI parameter."""

    profile: str = "ci"
    run_dir: str | None = None
    data_root: str | None = None
    dataset: str = "cifar10"
    mapping: Any = "mod5"
    width: int = 8
    epochs: int = 3
    # A budget in optimiser steps (rounded up to whole epochs) sets `epochs` when given.
    steps: int | None = None
    seed: int = 0
    train_per_class: int | None = None
    test_per_class: int | None = None
    val_per_class: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "onecycle"
    # Fractions of training at which the step schedule divides the lr by 10.
    step_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    # Random crop (pad 4) and horizontal flip of every training batch; off for the
    # no-augmentation protocol of the Neural Collapse literature (profile `full`).
    augment: bool = True
    checkpoint_epochs: list[int] | None = None
    amp: str = "auto"
    device: str = "auto"
    compile: bool = False
    compile_mode: str = "default"
    train_baseline: bool = True
    eval_batch_size: int = 1024
    # Test-split evaluation every this many epochs (and at checkpoints and the end).
    eval_every: int = 1
    # Clean (eval-mode, unaugmented) accuracy on the whole train split at every checkpoint,
    # logged during training: the terminal phase then needs no features of those checkpoints.
    clean_train_eval: bool = False
    # Checkpoints whose penultimate features are extracted: "all", or "phase" (needs
    # clean_train_eval): the coarse model at init, at its terminal-phase onset and at the end,
    # the baseline at the end. A w=16 forward pass over 60,000 images takes ~40 s on 2 cores.
    feature_epochs: str = "all"
    n_init: int = 10
    # l2 won on train clustering accuracy (train labels only) in the cpu run: see README.
    feature_norm: str = "l2"
    umap_points: int = 5000
    umap_neighbors: int = 15

    def __post_init__(self) -> None:
        # Paths are kept as strings so that the config stays plain JSON.
        for name in ("run_dir", "data_root"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if self.run_dir in (None, ""):
            self.run_dir = str(Path("runs") / str(self.profile))
        if isinstance(self.run_dir, str):
            self.run_dir = str(resolve_run_dir(self.run_dir))
        if self.checkpoint_epochs is None:
            self.checkpoint_epochs = default_checkpoints(self.epochs)
        validate(self)

    @property
    def models(self) -> tuple[str, ...]:
        """The models this run trains: the coarse one, and the 10-label baseline if asked."""
        return ("coarse", "baseline") if self.train_baseline else ("coarse",)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view of the configuration."""
        return dataclasses.asdict(self)


# Images per evaluation batch in the CPU profiles. A CPU forward pass slows down once a batch's
# activations leave the cache: 128 extracts features 3.5x and evaluates 3.2x faster than the
# GPU's 1024, with bit-identical features (benchmarks/eval_batch.py).
CPU_EVAL_BATCH = 128


def phase_checkpoints(epochs: int) -> list[int]:
    """Epochs 0 and 1, every 10% of training up to its first third, then every 5% to the end.

    The late ones are counted back from the end, so that they land on the last epoch; spacings
    are rounded down to whole epochs (at least 1), so the onset is known to within 5% of training.
    """
    checks.positive_int("epochs", epochs)
    step = max(1, epochs // 20)
    late = [e for e in range(epochs, 0, -step) if 3 * e >= epochs]
    early = range(2 * step, late[-1], 2 * step)
    return sorted({0, 1, *early, *late})

PROFILES: dict[str, dict[str, Any]] = {
    "ci": dict(
        width=8, epochs=3, train_per_class=500, test_per_class=200,
        checkpoint_epochs=[0, 1, 2, 3], umap_points=2000, n_init=10,
        eval_batch_size=CPU_EVAL_BATCH,
    ),
    "cpu": dict(width=16, epochs=30, checkpoint_epochs=[0, 1, 2, 4, 7, 10, 15, 20, 25, 30],
                eval_batch_size=CPU_EVAL_BATCH),
    "paper": dict(
        width=64, epochs=200, schedule="cosine",
        checkpoint_epochs=[0, 1, 2, 5, 10, 20, 50, 100, 150, 200],
    ),
    # Terminal phase on 2 cores (docs/protocol.md, section 7): 250 train images per class for
    # 6,000 steps, chosen by scripts/tpt_pilot.py on clean train accuracy (figures/tpt/pilot.json);
    # the full test set, evaluated every 25 epochs and at the checkpoints (every 5% of training).
    "tpt": dict(
        width=16, train_per_class=250, steps=6000, eval_every=25,
        checkpoint_epochs=list(range(0, 301, 15)), eval_batch_size=CPU_EVAL_BATCH,
    ),
    # The paper's claim where it is made (docs/protocol.md, section 7): all 50,000 train images,
    # no augmentation, lr 0.1 for 30% of training, 0.01 to 60%, then 0.001: the pilot of the
    # issue reached 99.8% clean coarse train accuracy three epochs after its first lr drop.
    # Checkpoints every 2 epochs (5% of training) after the first third, so the onset is known
    # to within 5% (phase_checkpoints, which also spreads them for any other budget).
    "full": dict(
        width=16, epochs=40, schedule="step", step_milestones=[0.3, 0.6], augment=False,
        checkpoint_epochs=phase_checkpoints(40), eval_every=2,
        clean_train_eval=True, feature_epochs="phase", eval_batch_size=CPU_EVAL_BATCH,
    ),
    # The experiments of notebooks 06-10 at CPU scale: a short budget on a stratified subset,
    # about 1.5 minutes of training per run on 2 cores (see README, Experiments).
    "exp": dict(
        width=8, epochs=15, train_per_class=1000, test_per_class=500,
        checkpoint_epochs=[0, 15], train_baseline=False, umap_points=2000,
        eval_batch_size=CPU_EVAL_BATCH,
    ),
}

# Profiles whose checkpoints follow a rule of the budget: a run given another budget gets the
# rule's checkpoints for it (the terminal phase stays sampled densely), not default_checkpoints.
CHECKPOINT_RULES: dict[str, Callable[[int], list[int]]] = {"full": phase_checkpoints}

PARAMETERS = tuple(f.name for f in dataclasses.fields(RunConfig))
# Parameters that change what is trained; analysis-only ones may differ between notebook runs.
TRAINING_KEYS = (
    "dataset", "mapping", "width", "epochs", "steps", "seed", "train_per_class", "test_per_class",
    "val_per_class", "batch_size", "lr", "weight_decay", "momentum", "schedule",
    "step_milestones", "augment", "checkpoint_epochs", "amp", "train_baseline",
)


def default_checkpoints(epochs: int) -> list[int]:
    """Epoch 0 (random init), 1, and about eight epochs spread over training."""
    checks.positive_int("epochs", epochs)
    marks = {0, 1, epochs} | {round(epochs * f) for f in (0.1, 0.2, 0.35, 0.5, 0.65, 0.8)}
    return sorted(m for m in marks if 0 <= m <= epochs)


def resolve(profile: str = "ci", **params: Any) -> RunConfig:
    """The profile's settings overridden by every parameter that is not None."""
    if profile not in PROFILES:
        raise ValueError(f"profile: unknown value {profile!r}; allowed: {', '.join(PROFILES)}")
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(PARAMETERS)}"
        )
    given = {k: v for k, v in params.items() if v is not None}
    if "epochs" in given and "steps" in given:
        raise ValueError(f"steps: give a budget in steps or in epochs, not both; got steps="
                         f"{given['steps']!r} and epochs={given['epochs']!r}")
    merged = {**PROFILES[profile], **given}
    if "epochs" in given:
        merged.pop("steps", None)
    if "steps" in merged:
        checks.positive_int("steps", merged["steps"])
        merged["epochs"] = epochs_for_steps(merged["steps"], merged)
    if ("epochs" in given or "steps" in given) and "checkpoint_epochs" not in given:
        # The profile's checkpoints belong to its own budget; spread new ones by its rule.
        rule = CHECKPOINT_RULES.get(profile)
        if rule is None:
            merged.pop("checkpoint_epochs", None)
        else:
            merged["checkpoint_epochs"] = rule(merged["epochs"])
    merged.pop("profile", None)
    return RunConfig(profile=profile, **merged)


def steps_per_epoch(params: dict[str, Any]) -> int:
    """Optimiser steps in one epoch of the run's train split: ceil(images / batch size)."""
    dataset = params.get("dataset", RunConfig.dataset)
    checks.choice("dataset", dataset, DATASETS)
    per_class = params.get("train_per_class") or (
        TRAIN_PER_CLASS[dataset] - (params.get("val_per_class") or 0))
    batch = checks.positive_int("batch_size", params.get("batch_size", RunConfig.batch_size))
    return math.ceil(checks.positive_int("train_per_class", per_class) * NUM_FINE[dataset] / batch)


def epochs_for_steps(steps: int, params: dict[str, Any]) -> int:
    """Whole epochs that hold at least `steps` optimiser steps on the run's train split."""
    return math.ceil(steps / steps_per_epoch(params))


def validate(cfg: RunConfig) -> None:
    """Check every parameter's type and range; the message names the parameter."""
    checks.choice("profile", cfg.profile, tuple(PROFILES))
    checks.optional_path("run_dir", cfg.run_dir)
    checks.optional_path("data_root", cfg.data_root)
    for name in ("width", "epochs", "batch_size", "eval_batch_size", "eval_every", "n_init",
                 "umap_points"):
        checks.positive_int(name, getattr(cfg, name))
    checks.integer("umap_neighbors", cfg.umap_neighbors, least=2)
    if cfg.steps is not None:
        checks.positive_int("steps", cfg.steps)
        need = epochs_for_steps(cfg.steps, cfg.to_dict())
        if cfg.epochs != need:
            raise ValueError(f"steps: {cfg.steps} steps need {need} epochs of this train split, "
                             f"but epochs={cfg.epochs}")
    checks.integer("seed", cfg.seed, least=0, most=MAX_SEED)
    for name in ("train_per_class", "test_per_class", "val_per_class"):
        if getattr(cfg, name) is not None:
            checks.positive_int(name, getattr(cfg, name))
    checks.number("lr", cfg.lr, positive=True)
    checks.number("weight_decay", cfg.weight_decay)
    checks.number("momentum", cfg.momentum)
    if cfg.momentum >= 1:
        raise ValueError(f"momentum: must be in [0, 1), got {cfg.momentum!r}")
    checks.choice("dataset", cfg.dataset, DATASETS)
    checks.choice("schedule", cfg.schedule, SCHEDULES)
    checks.choice("amp", cfg.amp, AMP_MODES)
    checks.choice("device", cfg.device, DEVICES)
    checks.choice("feature_norm", cfg.feature_norm, FEATURE_NORMS)
    checks.choice("compile_mode", cfg.compile_mode, COMPILE_MODES)
    checks.choice("feature_epochs", cfg.feature_epochs, FEATURE_EPOCHS)
    milestones = cfg.step_milestones
    if (not isinstance(milestones, (list, tuple)) or not milestones
            or any(isinstance(m, bool) or not isinstance(m, (int, float)) for m in milestones)
            or any(not 0 < m < 1 for m in milestones)
            or any(b <= a for a, b in zip(milestones, milestones[1:], strict=False))):
        raise ValueError("step_milestones: must be a non-empty increasing list of fractions "
                         f"of training in (0, 1), e.g. [0.5, 0.75], got {milestones!r}")
    cfg.step_milestones = [float(m) for m in milestones]
    for name in ("compile", "train_baseline", "augment", "clean_train_eval"):
        checks.flag(name, getattr(cfg, name))
    if cfg.feature_epochs == "phase" and not cfg.clean_train_eval:
        raise ValueError("feature_epochs: 'phase' finds the onset in the clean train accuracy "
                         "logged during training; set clean_train_eval=True, or use 'all'")
    ckpts = cfg.checkpoint_epochs
    if (not isinstance(ckpts, (list, tuple)) or not ckpts
            or any(not isinstance(e, int) or isinstance(e, bool) for e in ckpts)
            or min(ckpts) < 0 or max(ckpts) > cfg.epochs):
        raise ValueError(
            f"checkpoint_epochs: must be a non-empty list of integers in 0..epochs={cfg.epochs}, "
            f"got {ckpts!r}"
        )
    cfg.checkpoint_epochs = sorted(set(ckpts) | {cfg.epochs})
    # The official CIFAR-100 table is read from the data later; every other mapping is checked now.
    if not (cfg.dataset == "cifar100" and cfg.mapping == "cifar100"):
        coarse_mapping(cfg.mapping, cfg.dataset)


def diff(stored: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """Human-readable differences `key: stored -> new` over `keys`.

    A key absent from `stored` (a run recorded before the parameter existed) reads as the
    parameter's default, which is what that run used.
    """
    old = {k: stored.get(k, _DEFAULTS.get(k)) for k in keys}
    return [f"{k}: {old[k]!r} -> {new.get(k)!r}" for k in keys if old[k] != new.get(k)]


_DEFAULTS = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING
             else f.default for f in dataclasses.fields(RunConfig)}
