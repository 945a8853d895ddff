"""scripts/tpt_axis.py: its settings are the ones the published tpt axis runs were trained with."""

from __future__ import annotations

import importlib.util

import pytest

from nbutils.config import TRAINING_KEYS, resolve
from nbutils.paths import FIGURES_DIR, REPO
from nbutils.runs import load_json

SCRIPT = REPO / "scripts" / "tpt_axis.py"
PUBLISHED = sorted((FIGURES_DIR / "tpt" / "axis").glob("seed*/logs/config.json"))


def load_script():
    """The script as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("tpt_axis", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.parent.parent.name)
def test_published_axis_runs_are_the_scripts_configuration(path) -> None:
    stored = load_json(path)["config"]
    cfg = resolve("tpt", seed=stored["seed"], **load_script().OVERRIDES)
    for key in (*TRAINING_KEYS, "feature_epochs", "clean_train_eval"):
        expected = getattr(cfg, key)
        assert stored[key] == (list(expected) if isinstance(expected, tuple) else expected), key


def test_there_are_published_axis_runs() -> None:
    assert len(PUBLISHED) >= 2
