"""Headless runs show progress on the terminal: the kernels' bars reach the runner's stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbutils import progress
from nbutils.config import resolve
from nbutils.reproduce import kernel_environment


def test_kernel_environment_sends_bars_to_the_terminal_and_drops_the_backend(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv(progress.ENV, raising=False)
    with kernel_environment():
        assert os.environ[progress.ENV] == "terminal" and "MPLBACKEND" not in os.environ
    assert os.environ["MPLBACKEND"] == "Agg" and progress.ENV not in os.environ


def test_terminal_bars_write_to_the_original_stderr(capfd: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(progress.ENV, "terminal")
    for _ in progress.tqdm(range(3), desc="coarse", total=3):
        pass
    for _ in progress.tqdm(range(3), desc="steps", leave=False):
        pass
    err = capfd.readouterr().err
    assert "coarse" in err and "3/3" in err and "steps" not in err


@pytest.mark.slow
def test_a_kernel_like_child_reports_every_epoch_with_an_eta(tmp_path: Path,
                                                             fake_cache: Path) -> None:
    """A child process whose sys.stderr is captured (as a kernel's) still reaches fd 2."""
    cfg = resolve("ci", run_dir=str(tmp_path / "run"), data_root=str(fake_cache), width=2,
                  epochs=3, train_per_class=4, test_per_class=2, checkpoint_epochs=[0, 3],
                  train_baseline=False, amp="off", device="cpu")
    code = ("import io, sys\nfrom nbutils import stages\nfrom nbutils.runs import load_run\n"
            "sys.stderr = io.StringIO()\n"
            f"stages.train(load_run({cfg.run_dir!r}))\n")
    params = {k: v for k, v in cfg.to_dict().items() if k != "profile"}
    stages_cfg = f"from nbutils.stages import configure\nconfigure('ci', **{params!r})"
    env = {**os.environ, progress.ENV: "terminal"}
    subprocess.run([sys.executable, "-c", stages_cfg], check=True, env=env)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True)
    assert "coarse" in done.stderr and "3/3" in done.stderr and "<" in done.stderr
    assert "test_acc" in done.stderr


def test_a_published_copy_keeps_a_redrawn_bar_as_its_last_drawing(tmp_path: Path) -> None:
    import nbformat

    from nbutils.reproduce import clean_notebook

    nb = nbformat.v4.new_notebook()
    draws = [nbformat.v4.new_output("stream", name="stderr", text=f"\rsweep: {i}/3")
             for i in range(4)]
    cell = nbformat.v4.new_code_cell("run()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="start\n"), *draws,
                    nbformat.v4.new_output("stream", name="stderr", text="\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="a\rb\r\nc\n")]
    nb.cells = [cell]
    src = tmp_path / "in.ipynb"
    nbformat.write(nb, src)
    out = nbformat.read(clean_notebook(src, tmp_path / "out.ipynb"), as_version=4)
    assert [(o.name, o.text) for o in out.cells[0].outputs] == [
        ("stdout", "start\n"), ("stderr", "sweep: 3/3\n"), ("stdout", "b\r\nc\n")]


def test_an_oversized_copy_is_refused_and_the_published_one_left_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat

    from nbutils import reproduce

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    src, dst = tmp_path / "in.ipynb", tmp_path / "published.ipynb"
    nbformat.write(nb, src)
    dst.write_text("the published copy")
    monkeypatch.setattr(reproduce, "MAX_PUBLISHED_BYTES", 10)
    with pytest.raises(ValueError, match="published.ipynb.*over the 2 MiB.*left as it was"):
        reproduce.clean_notebook(src, dst)
    assert dst.read_text() == "the published copy" and sorted(tmp_path.iterdir()) == [src, dst]
