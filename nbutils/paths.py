"""Where the project's files live: the repository, its notebooks, figures and runs."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
FIGURES_DIR = REPO / "figures"


def runs_root() -> Path:
    """The folder relative run directories resolve against.

    `$NBUTILS_RUNS` when set; else the repository root when nbutils runs from a checkout (so
    a run trained in JupyterLab, whose kernel starts in notebooks/, is the one
    `python -m nbutils analyze` finds from the root); else the current directory.
    """
    env = os.environ.get("NBUTILS_RUNS")
    if env:
        return Path(env).expanduser()
    return REPO if (REPO / "pyproject.toml").is_file() else Path.cwd()


def resolve_run_dir(run_dir: str | os.PathLike) -> Path:
    """`run_dir` as given when absolute, else under `runs_root()`."""
    path = Path(run_dir).expanduser()
    return path if path.is_absolute() else runs_root() / path
