"""The batch runner: notebooks 01-05 through papermill into a run directory, then publishing.

This is the only module that executes notebooks; everything the notebooks compute is a
function of `nbutils.stages`, which the sweeps and the command line call directly.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import papermill as pm
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from nbutils import checks, cost, progress
from nbutils.config import TRAINING_KEYS, RunConfig, resolve
from nbutils.distributed import preflight
from nbutils.paths import FIGURES_DIR, NOTEBOOK_DIR, REPO
from nbutils.run_data import load_run_data
from nbutils.runs import atomic_write, create_run, load_json, load_run, save_json
from nbutils.stages import publish, publish_figures

NOTEBOOKS = ("01_train", "02_features", "03_collapse", "04_recovery", "05_umap")
EXPERIMENTS = ("06_dynamics", "07_grid", "08_hierarchies", "09_split", "10_synthetic",
               "12_collapse_strength")
# Profiles from the most to the least costly: a costly run names the ones after it.
CHEAPER = ("paper", "cpu", "ci")
PUBLISHED_PROFILES = ("cpu", "paper")
# Executed copies are read on the web: widget state (tqdm bars) is dead weight there.
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
MAX_PUBLISHED_BYTES = 2 * 2**20
# A carriage return redraws its line (text progress bars): only the last drawing is seen.
OVERDRAWN = re.compile(r"[^\n]*\r(?=[^\n])")


class IPCKernelManager(AsyncKernelManager):
    """Kernels on local sockets (IPC) in the temp folder, not TCP ports.

    Over TCP ipykernel warns at every start that traffic is unencrypted, one noisy line per
    notebook on the runner's terminal; a local socket has nothing to warn about.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transport = "ipc"
        self.ip = str(Path(tempfile.gettempdir()) / f"nbutils-kernel-{uuid.uuid4().hex}")


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
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(src), str(dst), parameters=params, cwd=str(REPO),
                            progress_bar=False, log_output=False, kernel_name="python3",
                            kernel_manager_class=IPCKernelManager)
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


@contextlib.contextmanager
def kernel_environment() -> Iterator[None]:
    """The environment the kernels inherit while the batch runner executes notebooks.

    Progress bars go to this terminal, not into the cells; and no MPLBACKEND (a headless
    shell often sets Agg) so that the kernel's inline backend embeds every figure in the
    executed notebook.
    """
    saved = {k: os.environ.get(k) for k in (progress.ENV, "MPLBACKEND")}
    os.environ[progress.ENV] = "terminal"
    os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_notebooks(cfg: RunConfig, overrides: dict[str, Any], resume: bool = True,
                  notebooks: tuple[str, ...] | None = None) -> dict[str, float]:
    """Execute `notebooks` (default 01-05) in order into `run_dir/notebooks`; seconds each."""
    notebooks = NOTEBOOKS if notebooks is None else notebooks
    out = Path(cfg.run_dir) / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    with kernel_environment():
        for name in notebooks:
            print(f"[nbutils] {name} ...", file=sys.stderr, flush=True)
            seconds[name] = run_notebook(NOTEBOOK_DIR / f"{name}.ipynb", out / f"{name}.ipynb",
                                         notebook_parameters(cfg, name, overrides, resume))
            print(f"[nbutils] {name} done in {seconds[name]:.0f} s", file=sys.stderr, flush=True)
    save_json(Path(cfg.run_dir) / "notebook_seconds.json", seconds)
    return seconds


def coalesce_streams(outputs: list[Any]) -> list[Any]:
    """Consecutive stream outputs of one name merged, each line as its last redraw left it."""
    merged: list[Any] = []
    for out in outputs:
        last = merged[-1] if merged else {}
        if (out.get("output_type") == "stream" and last.get("output_type") == "stream"
                and last.get("name") == out.get("name")):
            last["text"] += out["text"]
        else:
            merged.append(out)
    for out in merged:
        if out.get("output_type") == "stream":
            out["text"] = OVERDRAWN.sub("", out["text"])
    return merged


def clean_notebook(src: Path, dst: Path, rename: dict[str, str] | None = None) -> Path:
    """Copy an executed notebook for reading on the web: no widget state, no papermill noise.

    A sweep's progress bar, redrawn for hours, is kept as its last drawing (coalesce_streams).

    `rename` maps strings (a scratch directory's path) to what the reader should see instead.
    """
    text = src.read_text()
    for old, new in (rename or {}).items():
        text = text.replace(old, new)
    nb = nbformat.reads(text, as_version=4)
    nb.metadata.pop("widgets", None)
    nb.metadata.get("papermill", {}).pop("input_path", None)
    nb.metadata.get("papermill", {}).pop("output_path", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            data = out.get("data", {})
            data.pop(WIDGET_MIME, None)
            # A tqdm bar without its widget is just its text repr: drop it.
            if out.get("output_type") in ("display_data", "execute_result") and (
                    set(data) <= {"text/plain"} and "it/s" in "".join(data.get("text/plain", ""))):
                continue
            outputs.append(out)
        cell.outputs = coalesce_streams(outputs)

    def write(tmp: Path) -> None:
        """The clean copy, refused before it replaces the published one when too large."""
        nbformat.write(nb, tmp)
        size = tmp.stat().st_size
        if size > MAX_PUBLISHED_BYTES:
            raise ValueError(f"{dst}: {size / 2**20:.1f} MiB, over the 2 MiB a published "
                             "notebook may take (left as it was); lower the figures' inline dpi "
                             "or the UMAP sample")

    return atomic_write(dst, write)


def publish_notebooks(cfg: RunConfig, dest: Path, rename: dict[str, str] | None = None
                      ) -> list[Path]:
    """Clean copies of the run's executed notebooks in `dest/notebooks` (see clean_notebook)."""
    return [clean_notebook(src, dest / "notebooks" / src.name, rename)
            for src in sorted((Path(cfg.run_dir) / "notebooks").glob("*.ipynb"))]


def cost_check(cfg: RunConfig, yes: bool) -> str:
    """Estimate the run's cost here and the cheaper profiles'; refuse past the limit unless yes."""
    def sized(c: RunConfig) -> cost.Estimate:
        """The estimate of `c` with its own data sizes."""
        data = load_run_data(c)
        return cost.estimate(c, len(data.train), len(data.test))

    cheaper = CHEAPER[CHEAPER.index(cfg.profile) + 1:] if cfg.profile in CHEAPER else []
    others = [sized(resolve(p, data_root=cfg.data_root, device=cfg.device)) for p in cheaper]
    return cost.check(sized(cfg), others, confirmed=yes)


def reproduce(
    profile: str = "paper", run_dir: str | None = None, force: bool = False,
    publish_dir: str | None = None, resume: bool = True, yes: bool = False, **overrides: Any,
) -> dict[str, Any]:
    """Notebooks 01-05 into the run directory, then results.json/md (and figures/<profile>).

    Before any work, a few timed steps estimate the cost on this machine; past
    `cost.LIMIT_HOURS` the run stops unless `yes`.
    """
    checks.flag("resume", resume)
    checks.flag("yes", yes)
    cfg = resolve(profile, run_dir=run_dir, **overrides)
    # Device, ranks and data are checked here, not minutes later inside a notebook.
    preflight(cfg)
    load_run_data(cfg)
    print(cost_check(cfg, yes), file=sys.stderr, flush=True)
    create_run(cfg, force=force)
    run_notebooks(cfg, {k: v for k, v in overrides.items() if v is not None}, resume)
    results = load_json(Path(cfg.run_dir) / "results.json")
    if publish_dir or profile in PUBLISHED_PROFILES:
        dest = Path(publish_dir) if publish_dir else REPO / "figures" / profile
        publish(cfg, dest)
        publish_notebooks(cfg, dest)
    print((Path(cfg.run_dir) / "results.md").read_text())
    return results


def execute_published(logs: str | Path, dest: str | Path | None = None) -> list[Path]:
    """Execute notebooks 01-05 against a published run's logs; clean copies in dest/notebooks.

    The logs (e.g. `figures/paper/logs`, a run trained elsewhere) are copied to a scratch
    directory first, so that executing the notebooks never writes into the published folder.
    """
    logs = Path(logs)
    dest = Path(dest) if dest is not None else logs.parent
    stored = load_run(logs)
    with tempfile.TemporaryDirectory(prefix="nbutils-published-") as tmp:
        run_dir = Path(tmp) / logs.parent.name
        shutil.copytree(logs, run_dir)
        cfg = load_run(run_dir)
        # 01 re-opens the run with exactly the values it was trained with.
        training = {k: getattr(stored, k) for k in TRAINING_KEYS}
        run_notebooks(cfg, training)
        publish_figures(cfg, dest)
        # The scratch path means nothing to a reader; say whose copy it was.
        shown = logs.resolve().relative_to(REPO) if logs.resolve().is_relative_to(REPO) else logs
        return publish_notebooks(cfg, dest, {str(run_dir): f"<scratch copy of {shown}>"})


def notebook_parameter_names(name: str) -> list[str]:
    """The names in an experiment notebook's `parameters` cell."""
    if name not in EXPERIMENTS:
        raise ValueError(f"experiments: unknown {name!r}; allowed: {', '.join(EXPERIMENTS)}")
    return list(pm.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb")))


def run_experiments(names: tuple[str, ...] = EXPERIMENTS,
                    out: Path = REPO / "runs" / "experiments" / "notebooks",
                    publish_dir: Path | None = FIGURES_DIR / "experiments",
                    parameters: dict[str, Any] | None = None) -> list[Path]:
    """Execute experiment notebooks; clean copies in publish_dir/notebooks.

    Each runs with its defaults, except `parameters` (for one notebook only): papermill
    injects them, so the executed copy shows them. Each notebook writes its figures and
    results JSON to `figures/experiments` itself (its `out_dir`); its sweep reuses every run
    that has already finished.
    """
    unknown = sorted(set(names) - set(EXPERIMENTS))
    if unknown or not names:
        raise ValueError(f"experiments: unknown {unknown or names!r}; allowed: "
                         f"{', '.join(EXPERIMENTS)}")
    parameters = parameters or {}
    if parameters and len(names) != 1:
        raise ValueError(f"experiments: parameters {sorted(parameters)} need exactly one "
                         f"notebook, got {list(names)}")
    allowed = notebook_parameter_names(names[0]) if parameters else []
    wrong = sorted(set(parameters) - set(allowed))
    if wrong:
        raise ValueError(f"experiments: {names[0]} has no parameter {wrong}; allowed: "
                         f"{', '.join(allowed)}")
    out.mkdir(parents=True, exist_ok=True)
    done = []
    with kernel_environment():
        for name in names:
            print(f"[nbutils] {name} ...", file=sys.stderr, flush=True)
            seconds = run_notebook(NOTEBOOK_DIR / f"{name}.ipynb", out / f"{name}.ipynb",
                                   parameters)
            print(f"[nbutils] {name} done in {seconds:.0f} s", file=sys.stderr, flush=True)
            if publish_dir is not None:
                # Paths in messages (a run's lock) are shown from the repository root.
                done.append(clean_notebook(out / f"{name}.ipynb",
                                           publish_dir / "notebooks" / f"{name}.ipynb",
                                           {f"{REPO}{os.sep}": ""}))
    return done
