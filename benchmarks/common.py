"""Helpers shared by the benchmark scripts: thread caps and the load average."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch
from threadpoolctl import threadpool_limits


def limit_threads(n: int | None) -> contextlib.AbstractContextManager:
    """Cap torch's and the BLAS/OpenMP libraries' threads at n; no cap for None."""
    if n is None:
        return contextlib.nullcontext()
    torch.set_num_threads(n)
    return threadpool_limits(n)


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run(parse_args: Callable, measure: Callable) -> None:
    """Parse the flags and measure under the thread cap."""
    args = parse_args()
    with limit_threads(args.threads):
        measure(args)
