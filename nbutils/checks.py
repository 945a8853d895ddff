"""Input checks shared by every module: each raises ValueError naming the parameter.

Also the allowed values of parameters that more than one module validates, so that a module
checking a name need not import the (heavier) module that uses it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# Feature normalisations before k-means (docs/protocol.md, section 4).
FEATURE_NORMS = ("none", "l2", "center_l2", "standardize")


def integer(name: str, value: Any, least: int = 1, most: int | None = None) -> int:
    """`value` as an int in [least, most] (bools refused), or ValueError naming `name`."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or value < least or (most is not None and value > most):
        bound = f"in {least}..{most}" if most is not None else f">= {least}"
        raise ValueError(f"{name}: must be an integer {bound}, got {value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """`value` as an int >= 1, or ValueError naming `name`."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def number(name: str, value: Any, allow_zero: bool = True, positive: bool = False) -> float:
    """`value` as a finite float (>= 0; > 0 when `positive` or not `allow_zero`)."""
    ok = (isinstance(value, (int, float, np.integer, np.floating))
          and not isinstance(value, (bool, np.bool_)) and math.isfinite(value))
    strict = positive or not allow_zero
    if not ok or value < 0 or (strict and value == 0):
        kind = "a positive" if strict else "a non-negative"
        raise ValueError(f"{name}: must be {kind} finite number, got {value!r}")
    return float(value)


def choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """`value` when it is one of `allowed`, else ValueError listing them."""
    if value not in allowed:
        raise ValueError(
            f"{name}: unknown value {value!r}; allowed: {', '.join(map(str, allowed))}"
        )
    return value


def flag(name: str, value: Any) -> bool:
    """`value` when it is True or False (a string such as 'no' would read as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: must be True or False, got {value!r}")
    return bool(value)


def optional_path(name: str, value: Any) -> str | None:
    """`value` when it is None or a path string."""
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name}: must be a path (a string) or None, got {value!r}")
    return value


def nonempty_list(name: str, value: Any, what: str = "values") -> list:
    """`value` when it is a non-empty list."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{name}: must be a non-empty list of {what}, got {value!r}")
    return value
