"""The pipeline's stages, defined once: train, features, collapse, recovery, UMAP, publish.

Notebooks 01-05, `python -m nbutils train|analyze|reproduce` and the sweeps all call these
functions; each stage reads the artifacts of the stages before it from the run directory and
writes its own, so any stage can be re-run alone. A *published* run (`figures/<profile>/logs`,
or a run analysed on a GPU box and copied back) holds only JSON logs and `compact.npz`: its
stages read their results from those files instead of recomputing them from features.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from nbutils import analysis, features, report, results
from nbutils.config import RunConfig, resolve
from nbutils.lock import run_lock
from nbutils.paths import FIGURES_DIR, REPO
from nbutils.run_data import RunData, load_run_data
from nbutils.runs import (
    atomic_write,
    compact_path,
    create_run,
    load_json,
    load_npz,
    model_dir,
)
from nbutils.train import train_model

STAGES = ("train", "features", "collapse", "recovery", "umap", "publish")
# What the published figures are drawn from; checkpoints and features are never copied.
PUBLISHED_LOGS = (
    "config.json", "timings.json", "controls.json", "results.json", "results.md", "compact.npz",
    "pairs.json", "phase_features.npz",
    "coarse/log.json", "coarse/collapse.json", "coarse/recovery.json", "coarse/train_meta.json",
    "baseline/log.json", "baseline/collapse.json", "baseline/train_meta.json",
)


def writing(cfg: RunConfig) -> contextlib.AbstractContextManager:
    """Hold the run's lock while a stage writes it (torchrun's other ranks write nothing)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return run_lock(cfg.run_dir)


def configure(profile: str, run_dir: str | None = None, force: bool = False,
              **params: Any) -> RunConfig:
    """Resolve a run's parameters and create (or re-open) its directory."""
    cfg = resolve(profile, run_dir=run_dir, **params)
    with writing(cfg):
        create_run(cfg, force=force)
    return cfg


def finished_log(cfg: RunConfig, model: str) -> list[dict] | None:
    """`model`'s training log when it covers all `cfg.epochs`, else None."""
    path = model_dir(cfg, model) / "log.json"
    if not path.is_file():
        return None
    log = load_json(path)
    return log if log and log[-1]["epoch"] == cfg.epochs else None


def is_published(cfg: RunConfig) -> bool:
    """Whether the run holds logs but no checkpoints (they stayed where it was trained)."""
    return (finished_log(cfg, "coarse") is not None
            and not (model_dir(cfg, "coarse") / "checkpoints").is_dir())


def train(cfg: RunConfig, data: RunData | None = None, models: tuple[str, ...] | None = None,
          resume: bool = True, progress: bool = True) -> dict[str, list[dict]]:
    """Train the run's models; a finished model is not trained again. Their per-epoch logs.

    A model stopped before its last epoch (at `$NBUTILS_DEADLINE`) ends the stage: the models
    after it are left for the next call, which resumes where this one stopped.
    """
    logs = {}
    with writing(cfg):
        for model in models or cfg.models:
            done = finished_log(cfg, model) if resume else None
            logs[model] = done if done is not None else train_model(
                cfg, model, data or load_run_data(cfg), resume=resume, progress=progress)
            if not logs[model] or logs[model][-1]["epoch"] < cfg.epochs:
                break
    return logs


def extract_features(cfg: RunConfig, overwrite: bool = False,
                     progress: bool = True) -> list[Path]:
    """Features of every checkpoint (none for a published run); the files."""
    if is_published(cfg):
        return []
    with writing(cfg):
        return features.extract_run(cfg, overwrite=overwrite, progress=progress)


def collapse(cfg: RunConfig, progress: bool = True) -> dict[str, list[dict]]:
    """NC metrics of every checkpoint of every model (read back for a published run)."""
    if is_published(cfg):
        return {m: load_json(model_dir(cfg, m) / "collapse.json") for m in cfg.models}
    with writing(cfg):
        return {m: analysis.collapse_history(cfg, m, progress=progress) for m in cfg.models}


def recovery(cfg: RunConfig, data: RunData | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Fine-label recovery over checkpoints, the controls, results.json and compact.npz.

    Returns the results.json record (read back for a published run).
    """
    if not is_published(cfg):
        with writing(cfg):
            analysis.recovery_history(cfg, progress=progress)
            analysis.controls(cfg, data or load_run_data(cfg))
            results.write_results(cfg)
            analysis.export_compact(cfg)
            analysis.export_phase_features(cfg)
    return load_json(Path(cfg.run_dir) / "results.json")


def record(cfg: RunConfig) -> dict[str, Any]:
    """results.json when the run has one, else what its logs hold so far, in the same keys.

    Notebooks 01 and 03 summarise a run before notebook 04 writes results.json: from the
    training logs (eval-mode test accuracies) and, once measured, the clean train accuracies
    and NC metrics of every checkpoint.
    """
    path = Path(cfg.run_dir) / "results.json"
    if path.is_file():
        return load_json(path)
    meta_path = model_dir(cfg, "coarse") / "train_meta.json"
    meta = load_json(meta_path) if meta_path.is_file() else {}
    out: dict[str, Any] = {
        "profile": cfg.profile, "mapping": cfg.mapping, "width": cfg.width, "epochs": cfg.epochs,
        "seed": cfg.seed, "dataset": cfg.dataset, "device": meta.get("device"),
        "amp": meta.get("amp"), "train_size": meta.get("train_size"),
        "test_size": meta.get("test_size"), "config": cfg.to_dict(),
    }
    for model in cfg.models:
        log = finished_log(cfg, model) or []
        nc_path = model_dir(cfg, model) / "collapse.json"
        nc = load_json(nc_path)[-1] if nc_path.is_file() else {}
        out[model] = {"train_acc": nc.get("train_acc"),
                      "test_acc": nc.get("test_acc", log[-1]["test_acc"] if log else None)}
    if (model_dir(cfg, "coarse") / "collapse.json").is_file():
        out["history"] = [
            {"epoch": h["epoch"], "coarse_train_acc": h["train_acc"],
             "coarse_test_acc": h["test_acc"], "nc": h["nc"]}
            for h in load_json(model_dir(cfg, "coarse") / "collapse.json")]
    return out


def compact(cfg: RunConfig) -> dict[str, Any]:
    """The run's compact.npz: the UMAP sample and the final recovered test labels."""
    return load_npz(compact_path(cfg))


def umap(cfg: RunConfig) -> dict[str, Any]:
    """UMAP views of the last checkpoint's train sample (from compact.npz when published)."""
    if not is_published(cfg):
        return analysis.umap_views(cfg)
    return analysis.umap_views_from_compact(cfg)


def analyze(cfg: RunConfig, data: RunData | None = None,
            progress: bool = True) -> dict[str, Any]:
    """Every stage after training: features, collapse, recovery; the results.json record."""
    extract_features(cfg, progress=progress)
    collapse(cfg, progress=progress)
    return recovery(cfg, data, progress=progress)


def run(cfg: RunConfig, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train and analyse one run (figures are the notebooks' business); its results."""
    data = load_run_data(cfg)
    train(cfg, data, resume=resume, progress=progress)
    return analyze(cfg, data, progress=progress)


def copy_atomic(src: Path, dst: Path) -> Path:
    """Copy a file so that a reader of `dst` never sees half of it."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def publish_figures(cfg: RunConfig, dest: Path) -> list[Path]:
    """Copy the run's figures (PNG) to `dest`."""
    return [copy_atomic(png, dest / png.name)
            for png in sorted((Path(cfg.run_dir) / "figures").glob("*.png"))]


def publish(cfg: RunConfig, dest: Path) -> Path:
    """Copy figures, results and the small logs of a run to `dest` (e.g. figures/cpu).

    The README and docs are not touched: `python -m nbutils readme` rebuilds them from the
    published files, and tests/test_docs.py fails while they are out of step.
    """
    run = Path(cfg.run_dir)
    dest.mkdir(parents=True, exist_ok=True)
    publish_figures(cfg, dest)
    copy_atomic(run / "results.json", dest / "results.json")
    for rel in PUBLISHED_LOGS:
        if (run / rel).is_file():
            copy_atomic(run / rel, dest / "logs" / rel)
    if dest.resolve().is_relative_to(FIGURES_DIR.resolve()):
        print(f"published to {dest}; `python -m nbutils seeds` (for a profile with seeds) and "
              f"`python -m nbutils readme` bring the README and docs up to date",
              file=sys.stderr)
    return dest


def refresh_docs() -> list[Path]:
    """Rebuild the README's results table, then fill every number token of the README and
    docs/*.md from the results files."""
    changed = [REPO / "README.md"] if results.update_readme(REPO / "README.md", FIGURES_DIR) else []
    for path in (REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))):
        if report.render_file(path) and path not in changed:
            changed.append(path)
    return changed
