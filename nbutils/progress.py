"""Progress bars that reach whoever is waiting: the notebook, or the terminal behind papermill.

In JupyterLab a bar is a widget in the cell. When the batch runner executes the notebooks
headlessly, nobody sees the cells until they finish, so it sets `NBUTILS_PROGRESS=terminal` and
the kernel draws plain-text bars (with rate and ETA) on the terminal it inherited instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as text_tqdm

ENV = "NBUTILS_PROGRESS"


def to_terminal() -> bool:
    """Whether bars go to the process's original stderr (a headless notebook run)."""
    return os.environ.get(ENV) == "terminal"


def tqdm(iterable: Iterable | None = None, **kwargs: Any) -> Any:
    """`tqdm.auto.tqdm`, or a text bar on the terminal under the batch runner."""
    if to_terminal():
        # Inner bars (steps of one epoch) would flood a log; the outer ones carry the ETA.
        if not kwargs.pop("leave", True):
            kwargs["disable"] = True
        return text_tqdm(iterable, file=sys.__stderr__, mininterval=5.0, **kwargs)
    return auto_tqdm(iterable, **kwargs)
