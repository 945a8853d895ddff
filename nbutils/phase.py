"""The terminal phase of training (docs/protocol.md, section 11), read off per-checkpoint accuracy.

A run is in the terminal phase when its clean (eval mode, no augmentation) train accuracy on the
labels it was trained on is at or above `threshold` at every checkpoint from some epoch on, and
that stretch covers at least `hold` of training. Training is taken to run from epoch 0 to the
last checkpoint's epoch, and the onset is known only to checkpoint resolution: the true onset
lies between the previous checkpoint and `onset_epoch`, so `held_fraction` is a lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

THRESHOLD = 0.995
HOLD = 0.3


def _check_fraction(name: str, value: Any) -> float:
    """value as a float in [0, 1], or ValueError naming `name`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0 <= value <= 1:
        raise ValueError(f"{name}: must be a fraction in [0, 1], got {value!r}")
    return float(value)


def _check_epochs(epochs: Sequence[int]) -> list[int]:
    """Non-empty, strictly increasing, non-negative integer epochs, or ValueError."""
    out = list(epochs)
    if not out:
        raise ValueError("epochs: must not be empty")
    if any(not isinstance(e, int) or isinstance(e, bool) or e < 0 for e in out):
        raise ValueError(f"epochs: must be non-negative integers, got {out!r}")
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"epochs: must be strictly increasing, got {out!r}")
    return out


def terminal_phase(
    epochs: Sequence[int],
    clean_train_acc: Sequence[float],
    threshold: float = THRESHOLD,
    hold: float = HOLD,
) -> dict[str, Any]:
    """Whether, and from which checkpoint, clean train accuracy stays >= threshold to the end."""
    epochs = _check_epochs(epochs)
    accs = list(clean_train_acc)
    if len(accs) != len(epochs):
        raise ValueError(
            f"clean_train_acc: needs one value per epoch ({len(epochs)}), got {len(accs)}"
        )
    accs = [_check_fraction(f"clean_train_acc[{i}]", a) for i, a in enumerate(accs)]
    threshold = _check_fraction("threshold", threshold)
    hold = _check_fraction("hold", hold)
    onset = None
    # Walk back from the end: the onset is the earliest checkpoint of the final run above threshold.
    for epoch, acc in zip(reversed(epochs), reversed(accs), strict=True):
        if acc < threshold:
            break
        onset = epoch
    total = epochs[-1]
    # A run with no training (a lone epoch-0 checkpoint) has no terminal phase to hold.
    held = 0.0 if onset is None or total == 0 else (total - onset) / total
    return {"reached": onset is not None and total > 0 and held >= hold,
            "onset_epoch": onset, "held_fraction": held, "threshold": threshold, "hold": hold}


def clean_train_curve(log: Sequence[dict[str, Any]]) -> dict[str, list]:
    """{epochs, accs} of the clean train accuracies a training log holds (clean_train_eval)."""
    rows = [row for row in log if row.get("clean_train_acc") is not None]
    return {"epochs": [row["epoch"] for row in rows],
            "accs": [row["clean_train_acc"] for row in rows]}


def terminal_phase_of(
    results: dict[str, Any], threshold: float = THRESHOLD, hold: float = HOLD,
    model: str = "coarse",
) -> dict[str, Any]:
    """terminal_phase of a results.json: from its `clean_train` curve of `model` (logged at every
    checkpoint during training) when it has one, else from its `history` (coarse) entries."""
    curve = (results.get("clean_train") or {}).get(model)
    if curve:
        return terminal_phase(curve["epochs"], curve["accs"], threshold, hold)
    if model != "coarse":
        raise ValueError(f"results: has no 'clean_train' curve of {model!r}")
    history = results.get("history")
    if not history:
        raise ValueError("results: has no 'history' entries to read the terminal phase from")
    try:
        epochs = [h["epoch"] for h in history]
        accs = [h["coarse_train_acc"] for h in history]
    except KeyError as err:
        raise ValueError(f"results: a 'history' entry lacks {err.args[0]!r}") from None
    return terminal_phase(epochs, accs, threshold, hold)
