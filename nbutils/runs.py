"""Run directories: atomic artifacts, the recorded config, and loading them back safely."""

from __future__ import annotations

import json
import os
import pickle
import platform
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nbutils import __version__, checks
from nbutils.config import PARAMETERS, TRAINING_KEYS, RunConfig, diff
from nbutils.paths import resolve_run_dir

MODELS = ("coarse", "baseline")
TMP_SUFFIX = ".tmp"
VERSIONED = ("nbutils", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "umap-learn")


class ArtifactError(RuntimeError):
    """A run artifact that is missing, truncated or corrupt."""


class RunConfigMismatch(ValueError):
    """An existing run directory was made with a different configuration."""


def _umask() -> int:
    """This process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place.

    A process killed at any moment leaves either the old file or the new one, never a part;
    at worst a hidden `.<name>.*.tmp` stays behind, which `clear_temporaries` removes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as done:
            # On disk before the rename: a crash of the machine cannot leave a renamed stub.
            os.fsync(done.fileno())
        # mkstemp makes the file private (0600); artifacts get the usual permissions.
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def clear_temporaries(root: Path) -> list[Path]:
    """Remove the temporaries that writers killed mid-write left under `root`."""
    root = Path(root)
    stale = sorted(root.rglob(f".*{TMP_SUFFIX}")) if root.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def save_json(path: Path, obj: Any) -> Path:
    """Write JSON atomically (indented, keys in insertion order)."""
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


def load_json(path: Path, remedy: str = "delete it and re-run the stage that writes it") -> Any:
    """Read JSON, turning a truncated or corrupt file into an ArtifactError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist; run the stage that writes it first")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        # Every file written here is one object or list, so a cut anywhere fails to parse.
        raise ArtifactError(f"{path} is truncated or corrupt ({err}); {remedy}") from err


# The `amp` of a run trained before its precision was recorded (runs.csv, the docs).
UNRECORDED_AMP = "unrecorded"


class UnsafeCheckpoint(ArtifactError):
    """A checkpoint whose pickle names globals outside SAFE_GLOBALS: it is never unpickled."""


def _numpy_reconstruct() -> tuple[Any, ...]:
    """numpy's array-unpickling function under the names numpy 1 and numpy 2 pickle it by."""
    core = getattr(np, "_core", None) or np.core
    fn = core.multiarray._reconstruct
    return ((fn, "numpy._core.multiarray._reconstruct"),
            (fn, "numpy.core.multiarray._reconstruct"))


# Everything a checkpoint of ours holds beyond tensors and plain Python values: the numpy
# legacy RNG state in last.pt (624 uint32 words and their dtype). Nothing else is unpickled.
SAFE_GLOBALS = (np.ndarray, np.dtype, type(np.dtype(np.uint32)), *_numpy_reconstruct())


def _refused(err: Exception) -> str:
    """The line of torch's weights-only error that names what it refused."""
    lines = [line.strip() for line in str(err).splitlines()]
    named = [line for line in lines if "global" in line.lower() or "but got" in line]
    return (named or lines or [type(err).__name__])[0]


def save_torch(path: Path, obj: Any) -> Path:
    """torch.save atomically."""
    return atomic_write(path, lambda p: torch.save(obj, p))


def verify_zip(path: Path, remedy: str) -> None:
    """Check a zip container (torch and npz files) against its own sizes and CRC-32s."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ArtifactError(
            f"{path} is truncated or corrupt ({type(err).__name__}: {err}); {remedy}"
        ) from err
    if bad is not None:
        raise ArtifactError(f"{path} is corrupt (member {bad} fails its CRC-32 check); {remedy}")


def load_torch(
    path: Path, map_location: str | torch.device = "cpu",
    remedy: str = "delete it and re-train that model (python -m nbutils train --no-resume)",
) -> Any:
    """torch.load of a verified file; a truncated or corrupt one is an ArtifactError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    # torch.load does not check the CRC-32s: a flipped byte in a tensor would load silently.
    verify_zip(path, remedy)
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise ArtifactError(f"{path} is truncated or corrupt ({err}); {remedy}") from err
        raise UnsafeCheckpoint(
            f"{path} holds Python objects that no nbutils checkpoint holds and was refused "
            f"unread ({_refused(err)}). If you trust where it came from, load it once with "
            f"torch.load's weights-only check switched off and save its 'model' state_dict "
            f"alone as {{'model': ..., 'epoch': N}}; else retrain that model "
            f"(python -m nbutils train --no-resume)"
        ) from err
    except Exception as err:  # torch raises several unrelated types for damaged files
        raise ArtifactError(
            f"{path} is truncated or corrupt ({type(err).__name__}: {err}); {remedy}"
        ) from err


def save_npz(path: Path, compress: bool = False, **arrays: np.ndarray) -> Path:
    """np.savez atomically; uncompressed by default, so that features load fast."""
    save = np.savez_compressed if compress else np.savez

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            save(handle, **arrays)

    return atomic_write(path, write)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an npz file, turning damage into an ArtifactError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist; run the feature stage (notebook 02) first")
    try:
        # zipfile checks each array's CRC-32 as it is read to the end.
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except Exception as err:  # zipfile, pickle and OS errors all mean a damaged file here
        raise ArtifactError(
            f"{path} is truncated or corrupt ({type(err).__name__}: {err}); delete it and "
            "re-run the feature stage (notebook 02 or python -m nbutils analyze)"
        ) from err


def git_commit() -> str | None:
    """The package checkout's git commit, or $NBUTILS_GIT_COMMIT for a copy without .git."""
    if os.environ.get("NBUTILS_GIT_COMMIT"):
        return os.environ["NBUTILS_GIT_COMMIT"]
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
    if found["nbutils"] is None:
        # Run from a source tree that was not pip-installed (e.g. copied to a GPU box).
        found["nbutils"] = __version__
    return found


# What to do about a refused run directory, for a run whose directory the user names.
RUN_DIR_HINT = "use another run_dir, or force=True (--force) to overwrite it"


def check_run_dir(cfg: RunConfig, force: bool = False, hint: str = RUN_DIR_HINT) -> list[str]:
    """The recorded training parameters `cfg` changes; raises on any unless `force`."""
    checks.flag("force", force)
    root = Path(cfg.run_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"run_dir: {root} exists and is not a directory")
    path = root / "config.json"
    stored = load_json(path)["config"] if path.is_file() else cfg.to_dict()
    changes = diff(stored, cfg.to_dict(), TRAINING_KEYS)
    if changes and not force:
        raise RunConfigMismatch(
            f"run_dir: {root} was made with a different configuration:\n  "
            + "\n  ".join(changes)
            + "\n" + hint
        )
    return changes


def create_run(cfg: RunConfig, force: bool = False, hint: str = RUN_DIR_HINT) -> Path:
    """Make the run directory and record its config, refusing a different existing one."""
    root = Path(cfg.run_dir)
    if check_run_dir(cfg, force, hint):
        # Old checkpoints would otherwise be resumed under the new configuration.
        for stale in (*MODELS, "figures", "notebooks"):
            shutil.rmtree(root / stale, ignore_errors=True)
        for stale in ("results.json", "results.md", "timings.json", "controls.json"):
            (root / stale).unlink(missing_ok=True)
    path = root / "config.json"
    record = {"config": cfg.to_dict(), "versions": versions(), "git_commit": git_commit()}
    if path.is_file():
        # Versions and commit describe the training; re-opening the run must not overwrite them.
        stored = load_json(path)
        record.update(versions=stored.get("versions"), git_commit=stored.get("git_commit"))
    save_json(path, record)
    return root


def load_run(run_dir: str | os.PathLike | None = None, profile: str | None = None,
             **params: Any) -> RunConfig:
    """A trained run's config: training parameters given must match, analysis ones override."""
    given_dir = run_dir if run_dir not in (None, "") else Path("runs") / (profile or "ci")
    root = resolve_run_dir(given_dir)
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
    if stored.get("data_root") and not Path(stored["data_root"]).is_dir():
        # The data copy of the machine that trained the run (e.g. a GPU box) is not here.
        stored["data_root"] = None
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


def compact_path(cfg: RunConfig) -> Path:
    """The run's small summary of its last checkpoint (what figures need without features)."""
    return Path(cfg.run_dir) / "compact.npz"


def phase_features_path(cfg: RunConfig) -> Path:
    """The test features of the coarse model at its terminal-phase onset and end (float16)."""
    return Path(cfg.run_dir) / "phase_features.npz"


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
