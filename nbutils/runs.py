"""Run directories: atomic artifacts, the recorded config, and loading them back safely."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nbutils.config import PARAMETERS, TRAINING_KEYS, RunConfig, diff

MODELS = ("coarse", "baseline")
VERSIONED = ("nbutils", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "umap-learn")


class ArtifactError(RuntimeError):
    """A run artifact that is missing, truncated or corrupt."""


class RunConfigMismatch(ValueError):
    """An existing run directory was made with a different configuration."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_json(path: Path, obj: Any) -> Path:
    """Write JSON atomically (indented, keys in insertion order)."""
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


def load_json(path: Path) -> Any:
    """Read JSON, turning a truncated or corrupt file into an ArtifactError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist; run the stage that writes it first")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path} is corrupt ({err}); delete it and re-run its stage") from err


def save_torch(path: Path, obj: Any) -> Path:
    """torch.save atomically."""
    return atomic_write(path, lambda p: torch.save(obj, p))


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load, turning a truncated or corrupt file into an ArtifactError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises several unrelated types for damaged zips
        raise ArtifactError(
            f"{path} is truncated or corrupt ({type(err).__name__}: {err}); delete it and "
            "re-run (training resumes from the last intact checkpoint)"
        ) from err


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    """np.savez atomically (uncompressed: features load fast and memory-map)."""
    return atomic_write(path, lambda p: np.savez(open(p, "wb"), **arrays))


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an npz file, turning damage into an ArtifactError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist; run the feature stage (notebook 02) first")
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except Exception as err:  # zipfile, pickle and OS errors all mean a damaged file here
        raise ArtifactError(
            f"{path} is truncated or corrupt ({type(err).__name__}: {err}); delete it and "
            "re-run the feature stage"
        ) from err


def git_commit() -> str | None:
    """The package checkout's git commit, if it is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, str | None]:
    """Versions of Python and the libraries a result depends on."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def device_name(device: torch.device) -> str:
    """The hardware a run used, in words."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


def create_run(cfg: RunConfig, force: bool = False) -> Path:
    """Make the run directory and record its config, refusing a different existing one."""
    root = Path(cfg.run_dir)
    path = root / "config.json"
    new = cfg.to_dict()
    changes = diff(load_json(path)["config"], new, TRAINING_KEYS) if path.is_file() else []
    if changes and force:
        # Old checkpoints would otherwise be resumed under the new configuration.
        for stale in (*MODELS, "figures", "notebooks"):
            shutil.rmtree(root / stale, ignore_errors=True)
        for stale in ("results.json", "results.md", "timings.json", "controls.json"):
            (root / stale).unlink(missing_ok=True)
    elif changes:
        raise RunConfigMismatch(
            f"run_dir: {root} was made with a different configuration:\n  "
            + "\n  ".join(changes)
            + "\nuse another run_dir, or force=True (--force) to overwrite it"
        )
    save_json(path, {"config": new, "versions": versions(), "git_commit": git_commit()})
    return root


def load_run(run_dir: str | os.PathLike | None = None, profile: str | None = None,
             **params: Any) -> RunConfig:
    """A trained run's config: training parameters given must match, analysis ones override."""
    root = Path(run_dir) if run_dir not in (None, "") else Path("runs") / (profile or "ci")
    path = root / "config.json"
    if not path.is_file():
        raise ArtifactError(f"run_dir: {root} has no config.json; run notebook 01 (train) first")
    stored = load_json(path)["config"]
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(PARAMETERS)}"
        )
    given = {k: v for k, v in params.items() if v is not None}
    if profile is not None:
        given["profile"] = profile
    checked = tuple(k for k in given if k in TRAINING_KEYS + ("profile",))
    changes = diff(stored, given, checked)
    if changes:
        raise RunConfigMismatch(
            f"run_dir: {root} was trained with other values:\n  " + "\n  ".join(changes)
            + "\nleave these parameters as None to use the run's values"
        )
    return RunConfig(**{**stored, **given, "run_dir": str(root)})


def model_dir(cfg: RunConfig, model: str) -> Path:
    """Directory of one trained model ('coarse' or 'baseline') inside the run."""
    if model not in MODELS:
        raise ValueError(f"model: unknown value {model!r}; allowed: {', '.join(MODELS)}")
    return Path(cfg.run_dir) / model


def checkpoint_path(cfg: RunConfig, model: str, epoch: int) -> Path:
    """Saved weights of `model` after `epoch` epochs (0 = initialisation)."""
    return model_dir(cfg, model) / "checkpoints" / f"epoch_{epoch:03d}.pt"


def features_path(cfg: RunConfig, model: str, epoch: int) -> Path:
    """Feature arrays of `model` after `epoch` epochs."""
    return model_dir(cfg, model) / "features" / f"epoch_{epoch:03d}.npz"


def record_time(cfg: RunConfig, stage: str, seconds: float) -> None:
    """Add a stage's wall time to the run's timings.json."""
    path = Path(cfg.run_dir) / "timings.json"
    timings = load_json(path) if path.is_file() else {}
    timings[stage] = seconds
    save_json(path, timings)


def load_timings(cfg: RunConfig) -> dict[str, float]:
    """Wall seconds of each stage run so far."""
    path = Path(cfg.run_dir) / "timings.json"
    return load_json(path) if path.is_file() else {}


def figure_path(cfg: RunConfig, name: str) -> Path:
    """Where a run's figure `name` is saved (PNG)."""
    return Path(cfg.run_dir) / "figures" / f"{name}.png"
