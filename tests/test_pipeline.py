"""Integration: notebooks 01-05 through papermill on the `ci` profile with real CIFAR-10."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from nbutils.reproduce import NOTEBOOKS, reproduce

FIGURES = ("training_curves", "nc_over_epochs", "nc_over_epochs_baseline", "recovery_over_epochs",
           "confusion_matrix", "results_table", "recovery_variants", "umap_all",
           "umap_per_superclass")
FRACTIONS = {
    "coarse": ("train_acc", "test_acc"),
    "baseline": ("train_acc", "test_acc"),
    "recovery": ("train_cluster_acc", "test_acc_true_coarse", "test_acc_pred_coarse",
                 "test_cluster_acc_true_coarse", "test_cluster_acc_pred_coarse", "nmi",
                 "ari", "linear_probe_test_acc"),
}


def fraction(x) -> bool:
    """A float in [0, 1]."""
    return isinstance(x, float) and 0.0 <= x <= 1.0


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory, cifar10_root: Path) -> Path:
    """One `ci` reproduction shared by the checks below."""
    run_dir = tmp_path_factory.mktemp("ci") / "run"
    reproduce("ci", run_dir=str(run_dir), data_root=str(cifar10_root))
    return run_dir


@pytest.mark.slow
def test_results_json_has_every_key_in_range(ci_run: Path) -> None:
    res = json.loads((ci_run / "results.json").read_text())
    assert (res["profile"], res["mapping"], res["width"], res["epochs"]) == ("ci", "mod5", 8, 3)
    assert isinstance(res["seed"], int) and res["device"].startswith("cpu")
    assert res["versions"]["torch"]
    for section, keys in FRACTIONS.items():
        assert all(fraction(res[section][k]) for k in keys), section
        for key, (low, high) in res[section]["ci95"].items():
            assert 0 <= low <= res[section][key] <= high <= 1, (section, key)
    per = res["recovery"]["per_superclass"]
    assert len(per) == 5 and all(fraction(x) for x in per)
    for control in ("random_init", "raw_pixels"):
        assert fraction(res["controls"][control]["test_acc_true_coarse"])
    coarse_nc = res["nc"]["coarse"]
    assert all(math.isfinite(coarse_nc[k]) and coarse_nc[k] >= 0 for k in
               ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3"))
    assert fraction(coarse_nc["nc4"]) and res["nc"]["fine"]["nc1"] > 0
    assert all(res["wall_seconds"][k] > 0 for k in ("train", "baseline", "analysis"))
    assert [h["epoch"] for h in res["history"]] == res["config"]["checkpoint_epochs"]
    # The ci run (3 epochs, 500 images per class at batch 128: 40 steps an epoch) records its
    # terminal phase by epoch and by step, whether or not it reached it.
    tpt = res["terminal_phase"]
    assert (tpt["threshold"], tpt["hold"]) == (0.995, 0.3) and isinstance(tpt["reached"], bool)
    assert tpt["onset_step"] == (None if tpt["onset_epoch"] is None else 40 * tpt["onset_epoch"])


@pytest.mark.slow
def test_every_figure_is_a_nonempty_image(ci_run: Path) -> None:
    for name in FIGURES:
        path = ci_run / "figures" / f"{name}.png"
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as img:
            assert img.format == "PNG" and min(img.size) > 300
            assert img.info.get("dpi", (0, 0))[0] >= 149


@pytest.mark.slow
def test_executed_notebooks_and_table_are_kept(ci_run: Path) -> None:
    for name in NOTEBOOKS:
        nb = json.loads((ci_run / "notebooks" / f"{name}.ipynb").read_text())
        last = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
        said = "".join("".join(o.get("data", {}).get("text/markdown", ""))
                       for o in last["outputs"])
        assert said and "{{" not in said, name
        assert {"01_train": "The `ci` run", "02_features": "penultimate features",
                "03_collapse": "NC1", "04_recovery": "k-means",
                "05_umap": "stratified sample"}[name] in said, name
    table = (ci_run / "results.md").read_text()
    assert "(b)" in table and "93%" in table


@pytest.mark.slow
def test_published_copies_are_clean_and_small(ci_run: Path, tmp_path: Path) -> None:
    from nbutils.reproduce import MAX_PUBLISHED_BYTES, WIDGET_MIME, publish_notebooks
    from nbutils.runs import load_run

    for path in publish_notebooks(load_run(ci_run), tmp_path):
        text = path.read_text()
        assert path.stat().st_size < MAX_PUBLISHED_BYTES and WIDGET_MIME not in text
        assert "image/png" in text or path.stem == "02_features", path.stem


@pytest.mark.slow
def test_notebooks_execute_against_published_logs(ci_run: Path, tmp_path: Path) -> None:
    from nbutils.reproduce import execute_published
    from nbutils.runs import load_run
    from nbutils.stages import publish

    dest = publish(load_run(ci_run), tmp_path / "published")
    before = sorted(p.relative_to(dest) for p in (dest / "logs").rglob("*"))
    executed = execute_published(dest / "logs", dest)
    assert [p.stem for p in executed] == list(NOTEBOOKS)
    features = json.loads((dest / "notebooks" / "02_features.ipynb").read_text())
    assert "published from its logs only" in json.dumps(features)
    recovery = json.loads((dest / "notebooks" / "04_recovery.ipynb").read_text())
    res = json.loads((dest / "results.json").read_text())
    assert f"{100 * res['recovery']['test_acc_pred_coarse']:.1f}%" in json.dumps(recovery)
    assert sorted(p.relative_to(dest) for p in (dest / "logs").rglob("*")) == before
    shown = [p.read_text() for p in executed]
    assert not any("nbutils-published-" in text for text in shown)
    assert f"<scratch copy of {dest / 'logs'}>" in shown[0]


@pytest.mark.slow
def test_published_logs_redraw_the_figures_without_features(ci_run: Path, tmp_path: Path) -> None:
    import shutil

    import numpy as np

    from nbutils.__main__ import main
    from nbutils.reproduce import publish
    from nbutils.runs import load_run

    dest = publish(load_run(ci_run), tmp_path / "published")
    copy = tmp_path / "redrawn"
    shutil.copytree(dest / "logs", copy)
    assert not list(copy.rglob("*.pt")) and not list(copy.rglob("features"))
    assert main(["render", "--run-dir", str(copy), "--no-umap"]) == 0
    for name in FIGURES[:6]:
        assert (copy / "figures" / f"{name}.png").stat().st_size > 10_000, name
    assert (copy / "results.json").read_bytes() == (ci_run / "results.json").read_bytes()
    res = json.loads((ci_run / "results.json").read_text())
    with np.load(copy / "compact.npz") as z:
        for key, variant in (("test_pred_true_coarse", "test_acc_true_coarse"),
                             ("test_pred_pred_coarse", "test_acc_pred_coarse")):
            assert np.mean(z[key] == z["test_fine"]) == pytest.approx(res["recovery"][variant])
        assert z["umap_features"].dtype == np.float16 and len(z["umap_fine"]) >= 1000


@pytest.mark.slow
def test_your_features_notebook_on_a_runs_features(ci_run: Path, tmp_path: Path) -> None:
    from nbutils.paths import NOTEBOOK_DIR
    from nbutils.reproduce import run_notebook

    out = tmp_path / "yours"
    run_notebook(NOTEBOOK_DIR / "11_your_features.ipynb", tmp_path / "11.ipynb",
                 {"run_dir": str(ci_run), "out_dir": str(out), "n_init": 2})
    res = json.loads((out / "results.json").read_text())
    ours = json.loads((ci_run / "results.json").read_text())
    assert res["recovery"]["test_acc_true_coarse"] == pytest.approx(
        ours["recovery"]["test_acc_true_coarse"], abs=0.05)
