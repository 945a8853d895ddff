"""Notebook parameters: declared with types and help, misspelt injected names refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import papermill as pm
import pytest

from nbutils.notebook import declared_and_injected, parameters
from nbutils.paths import NOTEBOOK_DIR

NOTEBOOKS = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
PARAMS_CELL = 'from typing import Optional\n\nwidth: Optional[int] = None  # w\nseed: int = 0  # s'
INJECTED = "# Parameters\nwidth = 16\n"


def test_declared_and_injected_names_from_the_cell_history() -> None:
    declared, injected = declared_and_injected(["", PARAMS_CELL, INJECTED, "x = 1"])
    assert declared == ["width", "seed"] and injected == ["width"]


def test_parameters_returns_declared_values_in_order() -> None:
    ns = {"In": ["", PARAMS_CELL, INJECTED], "width": 16, "seed": 0, "other": 1}
    assert parameters(ns) == {"width": 16, "seed": 0}


def test_misspelt_injected_parameter_is_refused_with_the_allowed_list() -> None:
    ns = {"In": ["", PARAMS_CELL, "# Parameters\neopchs = 5\n"], "width": None, "seed": 0,
          "eopchs": 5}
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) eopchs; this notebook "
                                         r"declares: width, seed"):
        parameters(ns)


def test_parameters_need_the_parameters_cell() -> None:
    with pytest.raises(ValueError, match="parameters"):
        parameters({"In": ["", "x = 1"]})


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_help_notebook_lists_typed_documented_parameters_without_warnings(name: str) -> None:
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    done = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(path)],
                          capture_output=True, text=True, check=True)
    assert "Unable to parse" not in done.stdout + done.stderr, name
    inferred = pm.inspect_notebook(str(path))
    assert inferred, name
    for param, info in inferred.items():
        assert info["inferred_type_name"] != "None", (name, param)
        assert info["help"], (name, param)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_have_parameters_and_no_outputs(name: str) -> None:
    nb = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []), name
    assert "notebook.parameters(globals())" in "".join(code[1]["source"]), name
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), name


@pytest.mark.slow
def test_papermill_run_with_a_misspelt_parameter_fails_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out.ipynb"
    with pytest.raises(pm.PapermillExecutionError, match="eopchs"):
        pm.execute_notebook(str(NOTEBOOK_DIR / "02_features.ipynb"), str(out),
                            parameters={"eopchs": 5, "run_dir": str(tmp_path / "none")},
                            kernel_name="python3", progress_bar=False)
    assert not (tmp_path / "none").exists()


def test_the_training_notebook_declares_every_run_parameter() -> None:
    from nbutils.config import PARAMETERS

    declared = set(pm.inspect_notebook(str(NOTEBOOK_DIR / "01_train.ipynb")))
    assert set(PARAMETERS) <= declared, sorted(set(PARAMETERS) - declared)
