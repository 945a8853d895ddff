"""Run notebooks 01-05 through papermill into a run directory and publish the results."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from nbutils.config import RunConfig, resolve
from nbutils.runs import create_run, load_json, save_json

NOTEBOOKS = ("01_train", "02_features", "03_collapse", "04_recovery", "05_umap")
REPO = Path(__file__).resolve().parent.parent
PUBLISHED_PROFILES = ("cpu", "paper")
# Small logs the published figures are drawn from; checkpoints and features are never copied.
PUBLISHED_LOGS = (
    "config.json", "timings.json", "controls.json", "results.md",
    "coarse/log.json", "coarse/collapse.json", "coarse/recovery.json", "coarse/train_meta.json",
    "baseline/log.json", "baseline/collapse.json", "baseline/train_meta.json",
)


class NotebookFailed(RuntimeError):
    """A notebook of the pipeline raised; the executed copy is kept for inspection."""


def notebook_parameters(cfg: RunConfig, notebook: str, overrides: dict[str, Any]) -> dict:
    """Parameters papermill injects: all overrides go to 01, which records them for 02-05."""
    params = {"profile": cfg.profile, "run_dir": str(cfg.run_dir)}
    if notebook == "01_train":
        return {**params, **overrides}
    return {**params, "data_root": overrides.get("data_root")}


def run_notebook(src: Path, dst: Path, params: dict[str, Any]) -> float:
    """Execute one notebook with papermill; returns seconds, raises NotebookFailed on error."""
    import papermill as pm

    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(src), str(dst), parameters=params, cwd=str(REPO),
                            progress_bar=False, log_output=False, kernel_name="python3")
    except pm.PapermillExecutionError as err:
        raise NotebookFailed(
            f"{src.name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
            f"the executed notebook is kept at {dst}"
        ) from err
    return time.perf_counter() - t0


def publish(cfg: RunConfig, dest: Path) -> Path:
    """Copy figures, results and the small logs of a run to `dest` (e.g. figures/cpu)."""
    run = Path(cfg.run_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for png in sorted((run / "figures").glob("*.png")):
        shutil.copy2(png, dest / png.name)
    shutil.copy2(run / "results.json", dest / "results.json")
    for rel in PUBLISHED_LOGS:
        if (run / rel).is_file():
            target = dest / "logs" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run / rel, target)
    return dest


def reproduce(
    profile: str = "paper", run_dir: str | None = None, force: bool = False,
    publish_dir: str | None = None, **overrides: Any,
) -> dict[str, Any]:
    """Notebooks 01-05 into the run directory, then results.json/md (and figures/<profile>)."""
    cfg = resolve(profile, run_dir=run_dir, **overrides)
    create_run(cfg, force=force)
    out = Path(cfg.run_dir) / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    given = {k: v for k, v in overrides.items() if v is not None}
    seconds = {}
    for name in NOTEBOOKS:
        print(f"[nbutils] {name} ...", file=sys.stderr, flush=True)
        seconds[name] = run_notebook(REPO / "notebooks" / f"{name}.ipynb", out / f"{name}.ipynb",
                                     notebook_parameters(cfg, name, given))
        print(f"[nbutils] {name} done in {seconds[name]:.0f} s", file=sys.stderr, flush=True)
    save_json(Path(cfg.run_dir) / "notebook_seconds.json", seconds)
    results = load_json(Path(cfg.run_dir) / "results.json")
    if publish_dir or profile in PUBLISHED_PROFILES:
        publish(cfg, Path(publish_dir) if publish_dir else REPO / "figures" / profile)
    print((Path(cfg.run_dir) / "results.md").read_text())
    return results
