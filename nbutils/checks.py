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


def is_int(value: Any) -> bool:
    """An int or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(name: str, value: Any, least: int = 1, most: int | None = None) -> int:
    """`value` as an int in [least, most] (bools refused), or ValueError naming `name`."""
    if not is_int(value) or value < least or (most is not None and value > most):
        bound = f"in {least}..{most}" if most is not None else f">= {least}"
        raise ValueError(f"{name}: must be an integer {bound}, got {value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """`value` as an int >= 1, or ValueError naming `name`."""
    if not is_int(value) or value < 1:
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


# --------------------------------------------------------------------------- arrays
# Checks of the arrays a caller hands to your_features.analyze_features, already as numpy.


def feature_matrix(name: str, x: np.ndarray, dim: int | None = None) -> np.ndarray:
    """A non-empty, finite N x D float array (D = dim when given), or ValueError naming it."""
    if x.ndim != 2 or len(x) == 0 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a non-empty 2-D float array (N x D), got {x.dtype} "
                         f"{x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have D = {dim} columns like train_features, got "
                         f"{x.shape[1]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return x


def label_positions(name: str, y: np.ndarray, n: int, allowed: np.ndarray,
                    what: str) -> np.ndarray:
    """Integer labels of length n drawn from `allowed`, as positions in `allowed` (sorted)."""
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D int array of length {n}, got {y.dtype} {y.shape}")
    unknown = np.setdiff1d(y, allowed)
    if len(unknown):
        raise ValueError(f"{name}: label(s) {unknown[:10].tolist()} not in {what} "
                         f"(ids {allowed.tolist()})")
    return np.searchsorted(allowed, y)


def coarse_head(weight: np.ndarray | None, bias: np.ndarray | None, groups: int,
                dim: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The coarse head's (G x D weight, G bias), either None, or ValueError naming the part."""
    if weight is None:
        if bias is not None:
            raise ValueError("head_bias needs head_weight (G x D) as well")
        return None, None
    weight = feature_matrix("head_weight", weight, dim)
    if len(weight) != groups:
        raise ValueError(f"head_weight must have shape ({groups}, {dim}) (one row per "
                         f"super-class, ascending id), got {weight.shape}")
    if bias is not None and (bias.shape != (groups,)
                             or not np.issubdtype(bias.dtype, np.floating)):
        raise ValueError(f"head_bias must be a float array of shape ({groups},), got "
                         f"{bias.dtype} {bias.shape}")
    return weight, bias


def kmeans_options(n_init: Any, seed: Any, feature_norm: Any) -> None:
    """ValueError naming the first bad option among n_init, seed and feature_norm."""
    if not is_int(n_init) or n_init < 1:
        raise ValueError(f"n_init must be an int >= 1, got {n_init!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if feature_norm not in FEATURE_NORMS:
        raise ValueError(f"feature_norm must be one of {FEATURE_NORMS}, got {feature_norm!r}")
