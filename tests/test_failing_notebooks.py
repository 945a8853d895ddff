"""Failing notebooks: a notebook that raises stops `reproduce`, kept with its traceback
(docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from nbutils import __main__ as cli
from nbutils import reproduce


def failing_notebook(folder: Path) -> Path:
    """A notebook with a parameters cell whose third cell raises."""
    from nbformat.v4 import new_code_cell, new_notebook

    params = new_code_cell('profile = "ci"\nrun_dir = None\ndata_root = None')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell("x = 1"),
                             new_code_cell("raise ValueError('boom in the third cell')"),
                             new_code_cell("never = True")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "99_fails.ipynb")
    return folder / "99_fails.ipynb"


@pytest.mark.slow
def test_failing_notebook_stops_reproduce(tmp_path: Path, fake_cache: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    failing_notebook(tmp_path / "notebooks")
    monkeypatch.setattr(reproduce, "NOTEBOOK_DIR", tmp_path / "notebooks")
    monkeypatch.setattr(reproduce, "NOTEBOOKS", ("99_fails", "01_train"))
    run_dir = tmp_path / "run"
    code = cli.main(["reproduce", "--profile", "ci", "--run-dir", str(run_dir), "--data-root",
                     str(fake_cache), "--set", "train_per_class=4", "--set", "test_per_class=2"])
    err = capsys.readouterr().err
    assert code != 0
    assert "99_fails.ipynb failed at In [4]" in err and "ValueError: boom in the third cell" in err
    kept = run_dir / "notebooks" / "99_fails.ipynb"
    assert str(kept) in err
    cells = nbformat.read(kept, as_version=4).cells
    assert any(o.get("ename") == "ValueError" for c in cells for o in c.get("outputs", []))
    assert cells[-1].execution_count is None, "cells after the failing one must not run"
    assert not (run_dir / "notebooks" / "01_train.ipynb").exists(), "the run must stop"
