"""Profiles (SPEC 7) and the validated configuration of one run."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbutils.data import DATASETS
from nbutils.recovery import FEATURE_NORMS

SCHEDULES = ("onecycle", "cosine", "step")
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
    seed: int = 0
    train_per_class: int | None = None
    test_per_class: int | None = None
    val_per_class: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "onecycle"
    checkpoint_epochs: list[int] | None = None
    amp: str = "auto"
    device: str = "auto"
    compile: bool = False
    compile_mode: str = "default"
    train_baseline: bool = True
    eval_batch_size: int = 1024
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
        if self.checkpoint_epochs is None:
            self.checkpoint_epochs = default_checkpoints(self.epochs)
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view of the configuration."""
        return dataclasses.asdict(self)


PROFILES: dict[str, dict[str, Any]] = {
    "ci": dict(
        width=8, epochs=3, train_per_class=500, test_per_class=200,
        checkpoint_epochs=[0, 1, 2, 3], umap_points=2000, n_init=10,
    ),
    "cpu": dict(width=16, epochs=30, checkpoint_epochs=[0, 1, 2, 4, 7, 10, 15, 20, 25, 30]),
    "paper": dict(
        width=64, epochs=200, schedule="cosine",
        checkpoint_epochs=[0, 1, 2, 5, 10, 20, 50, 100, 150, 200],
    ),
    # The experiments of notebooks 06-10 at CPU scale: a short budget on a stratified subset,
    # about 1.5 minutes of training per run on 2 cores (see README, Experiments).
    "exp": dict(
        width=8, epochs=15, train_per_class=1000, test_per_class=500,
        checkpoint_epochs=[0, 15], train_baseline=False, umap_points=2000,
    ),
}

PARAMETERS = tuple(f.name for f in dataclasses.fields(RunConfig))
# Parameters that change what is trained; analysis-only ones may differ between notebook runs.
TRAINING_KEYS = (
    "dataset", "mapping", "width", "epochs", "seed", "train_per_class", "test_per_class",
    "val_per_class", "batch_size", "lr", "weight_decay", "momentum", "schedule",
    "checkpoint_epochs", "amp", "train_baseline",
)


def default_checkpoints(epochs: int) -> list[int]:
    """Epoch 0 (random init), 1, and about eight epochs spread over training."""
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
        raise ValueError(f"epochs: must be a positive integer, got {epochs!r}")
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
    merged = {**PROFILES[profile], **given}
    if "epochs" in given and "checkpoint_epochs" not in given:
        # The profile's checkpoints belong to its own epoch budget; spread new ones instead.
        merged.pop("checkpoint_epochs", None)
    merged.pop("profile", None)
    return RunConfig(profile=profile, **merged)


def _positive_int(name: str, value: Any) -> None:
    """Raise unless `value` is a positive int (bools excluded)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name}: unknown value {value!r}; allowed: {', '.join(allowed)}")


def _positive_float(name: str, value: Any, allow_zero: bool = False) -> None:
    """Raise unless `value` is a finite (non-negative when allowed) real number."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name}: must be {kind} finite number, got {value!r}")


def check_flag(name: str, value: Any) -> None:
    """Raise unless `value` is True or False (a string such as 'no' would read as True)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: must be True or False, got {value!r}")


def _optional_path(name: str, value: Any) -> None:
    """Raise unless `value` is None or a path string."""
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name}: must be a path (a string) or None, got {value!r}")


def validate(cfg: RunConfig) -> None:
    """Check every parameter's type and range; the message names the parameter."""
    from nbutils.data import coarse_mapping

    _choice("profile", cfg.profile, tuple(PROFILES))
    _optional_path("run_dir", cfg.run_dir)
    _optional_path("data_root", cfg.data_root)
    for name in ("width", "epochs", "batch_size", "eval_batch_size", "n_init", "umap_points",
                 "umap_neighbors"):
        _positive_int(name, getattr(cfg, name))
    if cfg.umap_neighbors < 2:
        raise ValueError(f"umap_neighbors: must be at least 2, got {cfg.umap_neighbors!r}")
    seed = cfg.seed
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed: must be an integer in 0..{MAX_SEED}, got {seed!r}")
    for name in ("train_per_class", "test_per_class", "val_per_class"):
        if getattr(cfg, name) is not None:
            _positive_int(name, getattr(cfg, name))
    _positive_float("lr", cfg.lr)
    _positive_float("weight_decay", cfg.weight_decay, allow_zero=True)
    _positive_float("momentum", cfg.momentum, allow_zero=True)
    if cfg.momentum >= 1:
        raise ValueError(f"momentum: must be in [0, 1), got {cfg.momentum!r}")
    _choice("dataset", cfg.dataset, DATASETS)
    _choice("schedule", cfg.schedule, SCHEDULES)
    _choice("amp", cfg.amp, AMP_MODES)
    _choice("device", cfg.device, DEVICES)
    _choice("feature_norm", cfg.feature_norm, FEATURE_NORMS)
    _choice("compile_mode", cfg.compile_mode, COMPILE_MODES)
    for name in ("compile", "train_baseline"):
        check_flag(name, getattr(cfg, name))
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
    """Human-readable differences `key: stored -> new` over `keys`."""
    return [f"{k}: {stored.get(k)!r} -> {new.get(k)!r}"
            for k in keys if stored.get(k) != new.get(k)]
