"""nbutils.plots: each figure plots the values it is given, saves through save_fig, and
survives incomplete histories."""

from __future__ import annotations

import colorsys
from collections.abc import Iterator

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from nbutils.analysis import umap_embedding
from nbutils.config import resolve
from nbutils.metrics import Classes
from nbutils.plots import charts

CIFAR10_MOD5 = Classes(n_coarse=5, n_fine=10)
FINE_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
              "dog", "frog", "horse", "ship", "truck"]
MOD5 = [i % 5 for i in range(10)]


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    """Close every figure a test opened so pyplot never warns about too many figures."""
    yield
    plt.close("all")


def epoch_log(epochs: int, scale: float) -> list[dict]:
    """Build a synthetic per-epoch training log."""
    return [
        {"epoch": e, "lr": 0.1 * (1 - e / epochs), "train_loss": scale / e,
         "train_acc": 1 - 0.5 / e, "test_loss": scale / e + 0.1, "test_acc": 0.9 - 0.5 / e,
         "seconds": 12.5}
        for e in range(1, epochs + 1)
    ]


def nc_history() -> list[dict]:
    """Build an NC history with epoch 0, a missing fine NC3/NC4 and some None values."""
    history = []
    for e in (0, 1, 3, 10):
        coarse = {"nc1": 5 / (e + 1), "nc2_equinorm": 0.3, "nc2_equinorm_head": 0.1,
                  "nc2_equiangular": 0.2,
                  "nc2_etf_distance": 1 / (e + 1), "nc3": 0.5 / (e + 1), "nc4": None}
        fine = {"nc1": 8 / (e + 1), "nc2_equinorm": 0.4, "nc2_equiangular": None,
                "nc2_etf_distance": 1.2 / (e + 1)}
        structure = {"nc1_within_superclass_mean": 3 / (e + 1),
                     "fine_variance_fraction_mean": 0.3 - e / 100}
        history.append({"epoch": e, "nc": {"coarse": coarse, "fine": fine,
                                           "fine_structure": structure}})
    return history


def recovery_history() -> list[dict]:
    """Build a recovery history in which some metrics are missing (None) at some epochs."""
    return [
        {"epoch": e, "recovery": {
            "train_cluster_acc": 0.6 + e / 100, "test_acc_true_coarse": 0.6 + e / 110,
            "test_acc_pred_coarse": None if e == 0 else 0.5 + e / 100,
            "linear_probe_test_acc": None, "nmi": 0.2 + e / 50, "ari": None}}
        for e in (0, 1, 5, 10)
    ]


def test_save_fig_writes_png_at_requested_dpi(tmp_path) -> None:
    fig, _ = plt.subplots(figsize=(4.0, 3.0))
    folder = tmp_path / "nested" / "dir"
    charts.save_fig(fig, folder, "fig", dpi=200)
    target = folder / "fig.png"
    with Image.open(target) as img:
        assert img.format == "PNG"
        assert img.size == (800, 600)
        assert img.info["dpi"] == pytest.approx((200, 200), abs=0.5)
    assert [p.name for p in folder.iterdir()] == ["fig.png"]


def test_save_fig_into_a_runs_figures_and_overwrite(tmp_path) -> None:
    cfg = resolve("ci", run_dir=str(tmp_path / "run"))
    for width in (2.0, 3.0):
        fig, _ = plt.subplots(figsize=(width, 2.0))
        charts.save_fig(fig, cfg, "curves")
    with Image.open(tmp_path / "run" / "figures" / "curves.png") as img:
        assert img.size == (450, 300)


def test_save_fig_rejects_low_dpi_and_names_with_extension(tmp_path) -> None:
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="dpi"):
        charts.save_fig(fig, tmp_path, "fig", dpi=72)
    for bad in ("fig.png", "a/b", ""):
        with pytest.raises(ValueError, match="name"):
            charts.save_fig(fig, tmp_path, bad)
    assert not any(tmp_path.iterdir())


def line_data(ax, label: str) -> tuple[list, list]:
    """(x, y) of the line labelled `label` on `ax`."""
    line = next(ln for ln in ax.lines if ln.get_label() == label)
    return list(line.get_xdata()), list(line.get_ydata())


def test_training_curves_plot_the_logs() -> None:
    coarse, base = epoch_log(5, 1.0), epoch_log(5, 2.0)
    fig = charts.plot_training_curves({"coarse (5 labels)": coarse, "baseline (10 labels)": base})
    loss_ax = fig.axes[0]
    assert {line.get_linestyle() for line in loss_ax.lines} == {"-", "--"}
    ys = sorted(tuple(np.round(line.get_ydata(), 9)) for line in loss_ax.lines)
    expected = sorted(tuple(np.round([r[k] for r in log], 9)) for log in (coarse, base)
                      for k in ("train_loss", "test_loss"))
    assert ys == expected
    acc_ys = {tuple(np.round(line.get_ydata(), 9)) for line in fig.axes[1].lines}
    assert tuple(np.round([r["test_acc"] for r in coarse], 9)) in acc_ys
    assert [tuple(line.get_xdata()) for line in loss_ax.lines][0] == (1, 2, 3, 4, 5)


def test_nc_over_epochs_plots_nc1_and_skips_none(tmp_path) -> None:
    history = nc_history()
    fig = charts.plot_nc_over_epochs(history, CIFAR10_MOD5)
    nc1_ax = fig.axes[0]
    assert nc1_ax.get_yscale() == "log"
    plotted = {tuple(np.round(line.get_ydata(), 9)) for line in nc1_ax.lines}
    for level in ("coarse", "fine"):
        assert tuple(np.round([h["nc"][level]["nc1"] for h in history], 9)) in plotted
    equiangular = [tuple(line.get_xdata()) for line in fig.axes[1].lines]
    assert (0, 1, 3, 10) in equiangular
    charts.save_fig(fig, tmp_path, "nc")
    assert (tmp_path / "nc.png").stat().st_size > 0


def test_nc_over_epochs_without_optional_metrics() -> None:
    history = [{"epoch": e, "nc": {"coarse": {"nc1": 1.0 / (e + 1)}}} for e in range(3)]
    fig = charts.plot_nc_over_epochs(history, CIFAR10_MOD5)
    ys = [list(line.get_ydata()) for line in fig.axes[0].lines]
    assert [1.0, 0.5, 1 / 3] in ys


def test_recovery_over_epochs_plots_each_metric_and_reference_lines(tmp_path) -> None:
    controls = {"random init": 0.60, "raw pixels": 0.55}
    history = recovery_history()
    fig = charts.plot_recovery_over_epochs(history, controls, 0.879, CIFAR10_MOD5, chance=0.5)
    ax = fig.axes[0]
    ref_levels = {round(float(line.get_ydata()[0]), 3) for line in ax.lines
                  if len(set(line.get_ydata())) == 1}
    assert {0.6, 0.55, 0.5, 0.879} <= ref_levels
    series = {tuple(np.round(line.get_ydata(), 9)) for line in ax.lines}
    assert tuple(np.round([h["recovery"]["train_cluster_acc"] for h in history], 9)) in series
    # (b) is missing at epoch 0: a gap there, its values after.
    b = [h["recovery"]["test_acc_pred_coarse"] for h in history[1:]]
    assert any(np.isnan(line.get_ydata()[0]) and np.allclose(line.get_ydata()[1:], b)
               for line in ax.lines if len(line.get_ydata()) == len(history))
    charts.save_fig(fig, tmp_path, "rec")


def test_recovery_without_baseline_draws_no_baseline_line() -> None:
    fig = charts.plot_recovery_over_epochs(recovery_history(), {}, None, CIFAR10_MOD5)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert not any("baseline" in label for label in labels)


def test_confusion() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 500)
    pred = np.where(rng.random(500) < 0.8, y, rng.integers(0, 10, 500))
    fig = charts.plot_confusion(y, pred, FINE_NAMES, title="recovered")
    matrix = np.asarray(fig.axes[0].collections[0].get_array()).reshape(10, 10)
    counts_true = np.bincount(y * 10 + pred, minlength=100).reshape(10, 10)
    np.testing.assert_allclose(matrix, counts_true / counts_true.sum(1, keepdims=True))
    counts = charts.plot_confusion(y, pred, FINE_NAMES, normalize=False)
    assert sum(int(t.get_text()) for t in counts.axes[0].texts) == 500


def test_results_table() -> None:
    fig = charts.plot_results_table([("coarse test accuracy", "87.4%"), ("recovery (b)", "78.5%")],
                                 title="Results")
    texts = [cell.get_text().get_text() for cell in fig.axes[0].tables[0].get_celld().values()]
    assert "recovery (b)" in texts and "78.5%" in texts


def test_grid_heatmap_with_unfinished_cells() -> None:
    values = np.array([[0.9, 0.8, np.nan], [0.85, 0.7, 0.6], [0.5, 0.4, 0.3]])
    fig = charts.plot_grid_heatmap(values, [0.1, 0.01, 0.001], [5e-3, 5e-4, 5e-5], "sweep")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "90.0%" in texts and "30.0%" in texts and len(texts) == 8


def hue(rgb: tuple[float, float, float]) -> float:
    """Hue of an RGB colour in [0, 1)."""
    return colorsys.rgb_to_hls(*rgb)[0]


def hue_distance(a: float, b: float) -> float:
    """Distance between two hues on the colour circle."""
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)


def test_fine_palette_pairs_share_hue() -> None:
    palette = charts.fine_palette(MOD5)
    coarse = charts.coarse_palette(5)
    assert len(palette) == 10 and len(set(palette)) == 10
    for s in range(5):
        light, dark = palette[s], palette[s + 5]
        assert hue_distance(hue(light), hue(dark)) < 0.02
        assert hue_distance(hue(light), hue(coarse[s])) < 0.02
        assert sum(light) > sum(dark)
        others = [hue(coarse[t]) for t in range(5) if t != s]
        assert min(hue_distance(hue(light), h) for h in others) > 0.03


def test_fine_palette_accepts_mapping() -> None:
    assert charts.fine_palette(dict(enumerate(MOD5))) == charts.fine_palette(np.array(MOD5))


def test_fine_palette_cifar100() -> None:
    fine_to_coarse = [i // 5 for i in range(100)]
    palette = charts.fine_palette(fine_to_coarse)
    assert len(palette) == 100 and len(set(palette)) == 100
    assert all(0.0 <= c <= 1.0 for colour in palette for c in colour)
    coarse = charts.coarse_palette(20)
    assert len(set(coarse)) == 20
    for s in range(20):
        assert all(hue_distance(hue(palette[f]), hue(coarse[s])) < 0.02
                   for f in range(5 * s, 5 * s + 5))


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """300 points in 10 well-separated Gaussian blobs (features, fine labels)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 16)) * 5
    labels = np.repeat(np.arange(10), 30)
    return centres[labels] + rng.normal(size=(300, 16)), labels


def test_umap_embedding_shape_and_determinism(blobs) -> None:
    features, _ = blobs
    first = umap_embedding(features, n_neighbors=10, seed=0)
    second = umap_embedding(features.astype(np.float64), n_neighbors=10, seed=0)
    assert first.shape == (300, 2) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)


def test_plot_umap_whole_set_and_fine_palette() -> None:
    rng = np.random.default_rng(1)
    embedding = rng.normal(size=(200, 2))
    fine = rng.integers(0, 10, 200)
    fig = charts.plot_umap(embedding, fine % 5, [f"s{s}" for s in range(5)], title="coarse")
    offsets = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert sorted(map(tuple, offsets)) == sorted(map(tuple, embedding))
    assert len(fig.axes[0].get_legend().get_texts()) == 5
    fig = charts.plot_umap(embedding, fine, FINE_NAMES, palette=charts.fine_palette(MOD5))
    assert len(fig.axes[0].collections) == 10


def test_plot_umap_grid_global_fine_labels() -> None:
    rng = np.random.default_rng(2)
    embeddings, labels, names = [], [], []
    for s in range(5):
        labels.append(rng.choice([s, s + 5], size=40))
        embeddings.append(rng.normal(size=(40, 2)))
        names.append([FINE_NAMES[s], FINE_NAMES[s + 5]])
    fig = charts.plot_umap_grid(embeddings, labels, names, [f"super-class {s}" for s in range(5)])
    first = fig.axes[0]
    assert [len(c.get_offsets()) for c in first.collections] == [
        int((labels[0] == 0).sum()), int((labels[0] == 5).sum())]


def test_plot_umap_grid_hides_spare_cells() -> None:
    rng = np.random.default_rng(3)
    n = 7
    fig = charts.plot_umap_grid([rng.normal(size=(20, 2)) for _ in range(n)],
                             [rng.integers(0, 3, 20) for _ in range(n)],
                             [["a", "b", "c"]] * n, [str(i) for i in range(n)])
    assert sum(ax.get_visible() for ax in fig.axes) == n and len(fig.axes) == 10


def test_training_curves_empty_logs_say_so() -> None:
    fig = charts.plot_training_curves({})
    assert all(not ax.lines for ax in fig.axes)
    assert all(any(t.get_text() == "not available" for t in ax.texts) for ax in fig.axes)
