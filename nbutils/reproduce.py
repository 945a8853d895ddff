"""Run notebooks 01-05 through papermill into a run directory and publish the results."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from nbutils.config import RunConfig, check_flag, resolve
from nbutils.results import update_readme
from nbutils.runs import atomic_write, create_run, load_json, save_json

NOTEBOOKS = ("01_train", "02_features", "03_collapse", "04_recovery", "05_umap")
REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
PUBLISHED_PROFILES = ("cpu", "paper")
# What the published figures are drawn from (`python -m nbutils render --run-dir <dest>/logs`
# redraws them); checkpoints and features are never copied.
PUBLISHED_LOGS = (
    "config.json", "timings.json", "controls.json", "results.json", "results.md", "compact.npz",
    "coarse/log.json", "coarse/collapse.json", "coarse/recovery.json", "coarse/train_meta.json",
    "baseline/log.json", "baseline/collapse.json", "baseline/train_meta.json",
)


class NotebookFailed(RuntimeError):
    """A notebook of the pipeline raised; the executed copy is kept for inspection."""


def notebook_parameters(
    cfg: RunConfig, notebook: str, overrides: dict[str, Any], resume: bool = True
) -> dict:
    """Parameters papermill injects: all overrides go to 01, which records them for 02-05."""
    params = {"profile": cfg.profile, "run_dir": str(cfg.run_dir)}
    if notebook == "01_train":
        return {**params, **overrides, "resume": resume}
    return {**params, "data_root": overrides.get("data_root")}


def run_notebook(src: Path, dst: Path, params: dict[str, Any]) -> float:
    """Execute one notebook with papermill; returns seconds, raises NotebookFailed on error."""
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(src), str(dst), parameters=params, cwd=str(REPO),
                            progress_bar=False, log_output=False, kernel_name="python3")
    except pm.PapermillExecutionError as err:
        raise NotebookFailed(
            f"{src.name} failed at In [{err.exec_count}]: {err.ename}: {err.evalue}\n"
            f"the executed notebook, with the cell's traceback, is kept at {dst}"
        ) from err
    except (DeadKernelError, CellTimeoutError) as err:
        raise NotebookFailed(
            f"{src.name} stopped: {type(err).__name__}: {err}\n"
            f"the notebook as far as it ran is kept at {dst}"
        ) from err
    return time.perf_counter() - t0


def copy_atomic(src: Path, dst: Path) -> Path:
    """Copy a file so that a reader of `dst` never sees half of it."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def publish(cfg: RunConfig, dest: Path) -> Path:
    """Copy figures, results and the small logs of a run to `dest` (e.g. figures/cpu).

    Publishing into the repository's figures/ also rebuilds the README's results table.
    """
    run = Path(cfg.run_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for png in sorted((run / "figures").glob("*.png")):
        copy_atomic(png, dest / png.name)
    copy_atomic(run / "results.json", dest / "results.json")
    for rel in PUBLISHED_LOGS:
        if (run / rel).is_file():
            copy_atomic(run / rel, dest / "logs" / rel)
    if dest.resolve().parent == (REPO / "figures").resolve():
        update_readme(REPO / "README.md", REPO / "figures")
    return dest


def reproduce(
    profile: str = "paper", run_dir: str | None = None, force: bool = False,
    publish_dir: str | None = None, resume: bool = True, **overrides: Any,
) -> dict[str, Any]:
    """Notebooks 01-05 into the run directory, then results.json/md (and figures/<profile>)."""
    from nbutils.train import load_run_data, preflight

    check_flag("resume", resume)
    cfg = resolve(profile, run_dir=run_dir, **overrides)
    # Device, ranks and data are checked here, not minutes later inside a notebook.
    preflight(cfg)
    load_run_data(cfg)
    create_run(cfg, force=force)
    out = Path(cfg.run_dir) / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    given = {k: v for k, v in overrides.items() if v is not None}
    seconds = {}
    for name in NOTEBOOKS:
        print(f"[nbutils] {name} ...", file=sys.stderr, flush=True)
        seconds[name] = run_notebook(NOTEBOOK_DIR / f"{name}.ipynb", out / f"{name}.ipynb",
                                     notebook_parameters(cfg, name, given, resume))
        print(f"[nbutils] {name} done in {seconds[name]:.0f} s", file=sys.stderr, flush=True)
    save_json(Path(cfg.run_dir) / "notebook_seconds.json", seconds)
    results = load_json(Path(cfg.run_dir) / "results.json")
    if publish_dir or profile in PUBLISHED_PROFILES:
        publish(cfg, Path(publish_dir) if publish_dir else REPO / "figures" / profile)
    print((Path(cfg.run_dir) / "results.md").read_text())
    return results
