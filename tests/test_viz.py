"""Tests for nbutils.viz: every figure builds, saves and survives incomplete histories."""

from __future__ import annotations

import colorsys
from collections.abc import Iterator

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from nbutils import viz

FINE_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
              "dog", "frog", "horse", "ship", "truck"]
MOD5 = [i % 5 for i in range(10)]


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    """Close every figure a test opened so pyplot never warns about too many figures."""
    yield
    plt.close("all")


def visible_axes(fig: Figure) -> int:
    """Count the axes a reader actually sees."""
    return sum(ax.get_visible() for ax in fig.axes)


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


def test_save_figure_writes_png_at_requested_dpi(tmp_path) -> None:
    fig, _ = plt.subplots(figsize=(4.0, 3.0))
    target = tmp_path / "nested" / "dir" / "fig.png"
    out = viz.save_figure(fig, target, dpi=200)
    assert out == target and target.stat().st_size > 0
    with Image.open(target) as img:
        assert img.format == "PNG"
        assert img.size == (800, 600)
        assert img.info["dpi"] == pytest.approx((200, 200), abs=0.5)
    assert [p.name for p in target.parent.iterdir()] == ["fig.png"]


def test_save_figure_default_dpi_and_overwrite(tmp_path) -> None:
    target = tmp_path / "fig.png"
    for width in (2.0, 3.0):
        fig, _ = plt.subplots(figsize=(width, 2.0))
        viz.save_figure(fig, target)
    with Image.open(target) as img:
        assert img.size == (450, 300)


def test_save_figure_rejects_low_dpi_and_other_formats(tmp_path) -> None:
    fig, _ = plt.subplots()
    with pytest.raises(ValueError):
        viz.save_figure(fig, tmp_path / "fig.png", dpi=72)
    with pytest.raises(ValueError):
        viz.save_figure(fig, tmp_path / "fig.pdf")
    assert not any(tmp_path.iterdir())


def test_training_curves() -> None:
    fig = viz.plot_training_curves({"coarse (5 labels)": epoch_log(5, 1.0),
                                    "baseline (10 labels)": epoch_log(5, 2.0)})
    assert isinstance(fig, Figure) and visible_axes(fig) == 3
    loss_ax = fig.axes[0]
    assert len(loss_ax.lines) == 4
    assert {line.get_linestyle() for line in loss_ax.lines} == {"-", "--"}


def test_nc_over_epochs_tolerates_missing_and_none(tmp_path) -> None:
    fig = viz.plot_nc_over_epochs(nc_history())
    assert visible_axes(fig) == 8
    nc1_ax = fig.axes[0]
    assert nc1_ax.get_yscale() == "log"
    assert nc1_ax.get_xlim()[0] <= 0 <= nc1_ax.get_xlim()[1]
    assert len(fig.axes[1].lines) == 3
    assert viz.save_figure(fig, tmp_path / "nc.png").stat().st_size > 0


def test_nc_over_epochs_without_optional_metrics() -> None:
    history = [{"epoch": e, "nc": {"coarse": {"nc1": 1.0 / (e + 1)}}} for e in range(3)]
    assert visible_axes(viz.plot_nc_over_epochs(history)) == 8


def test_recovery_over_epochs_reference_lines(tmp_path) -> None:
    controls = {"random init": 0.60, "raw pixels": 0.55}
    fig = viz.plot_recovery_over_epochs(recovery_history(), controls, 0.879, chance=0.5)
    assert visible_axes(fig) == 2
    ref_levels = {round(float(line.get_ydata()[0]), 3) for line in fig.axes[0].lines
                  if len(set(line.get_ydata())) == 1}
    assert {0.6, 0.55, 0.5, 0.879} <= ref_levels
    assert viz.save_figure(fig, tmp_path / "rec.png").stat().st_size > 0


def test_recovery_without_baseline() -> None:
    fig = viz.plot_recovery_over_epochs(recovery_history(), {}, None)
    assert visible_axes(fig) == 2


def test_confusion() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 500)
    pred = np.where(rng.random(500) < 0.8, y, rng.integers(0, 10, 500))
    fig = viz.plot_confusion(y, pred, FINE_NAMES, title="recovered")
    assert visible_axes(fig) == 1
    annotations = [t.get_text() for t in fig.axes[0].texts]
    assert len(annotations) == 100
    counts = viz.plot_confusion(y, pred, FINE_NAMES, normalize=False)
    assert sum(int(t.get_text()) for t in counts.axes[0].texts) == 500


def test_results_table() -> None:
    fig = viz.plot_results_table([("coarse test accuracy", "87.4%"), ("recovery (b)", "78.5%")],
                                 title="Results")
    assert visible_axes(fig) == 1
    texts = [cell.get_text().get_text() for cell in fig.axes[0].tables[0].get_celld().values()]
    assert "recovery (b)" in texts and "78.5%" in texts


def test_grid_heatmap_with_unfinished_cells() -> None:
    values = np.array([[0.9, 0.8, np.nan], [0.85, 0.7, 0.6], [0.5, 0.4, 0.3]])
    fig = viz.plot_grid_heatmap(values, [0.1, 0.01, 0.001], [5e-3, 5e-4, 5e-5], "sweep")
    assert visible_axes(fig) == 1
    assert "90.0%" in [t.get_text() for t in fig.axes[0].texts]


def hue(rgb: tuple[float, float, float]) -> float:
    """Hue of an RGB colour in [0, 1)."""
    return colorsys.rgb_to_hls(*rgb)[0]


def hue_distance(a: float, b: float) -> float:
    """Distance between two hues on the colour circle."""
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)


def test_fine_palette_pairs_share_hue() -> None:
    palette = viz.fine_palette(MOD5)
    coarse = viz.coarse_palette(5)
    assert len(palette) == 10 and len(set(palette)) == 10
    for s in range(5):
        light, dark = palette[s], palette[s + 5]
        assert hue_distance(hue(light), hue(dark)) < 0.02
        assert hue_distance(hue(light), hue(coarse[s])) < 0.02
        assert sum(light) > sum(dark)
        others = [hue(coarse[t]) for t in range(5) if t != s]
        assert min(hue_distance(hue(light), h) for h in others) > 0.03


def test_fine_palette_accepts_mapping() -> None:
    assert viz.fine_palette(dict(enumerate(MOD5))) == viz.fine_palette(np.array(MOD5))


def test_fine_palette_cifar100() -> None:
    fine_to_coarse = [i // 5 for i in range(100)]
    palette = viz.fine_palette(fine_to_coarse)
    assert len(palette) == 100 and len(set(palette)) == 100
    assert all(0.0 <= c <= 1.0 for colour in palette for c in colour)
    coarse = viz.coarse_palette(20)
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
    first = viz.umap_embedding(features, n_neighbors=10, seed=0)
    second = viz.umap_embedding(features.astype(np.float64), n_neighbors=10, seed=0)
    assert first.shape == (300, 2) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)


def test_plot_umap_whole_set_and_fine_palette() -> None:
    rng = np.random.default_rng(1)
    embedding = rng.normal(size=(200, 2))
    fine = rng.integers(0, 10, 200)
    fig = viz.plot_umap(embedding, fine % 5, [f"s{s}" for s in range(5)], title="coarse")
    assert visible_axes(fig) == 1
    assert len(fig.axes[0].get_legend().get_texts()) == 5
    fig = viz.plot_umap(embedding, fine, FINE_NAMES, palette=viz.fine_palette(MOD5))
    assert len(fig.axes[0].collections) == 10


def test_plot_umap_grid_global_fine_labels() -> None:
    rng = np.random.default_rng(2)
    embeddings, labels, names = [], [], []
    for s in range(5):
        labels.append(rng.choice([s, s + 5], size=40))
        embeddings.append(rng.normal(size=(40, 2)))
        names.append([FINE_NAMES[s], FINE_NAMES[s + 5]])
    fig = viz.plot_umap_grid(embeddings, labels, names, [f"super-class {s}" for s in range(5)])
    assert visible_axes(fig) == 5
    first = fig.axes[0]
    assert [len(c.get_offsets()) for c in first.collections] == [
        int((labels[0] == 0).sum()), int((labels[0] == 5).sum())]


def test_plot_umap_grid_hides_spare_cells() -> None:
    rng = np.random.default_rng(3)
    n = 7
    fig = viz.plot_umap_grid([rng.normal(size=(20, 2)) for _ in range(n)],
                             [rng.integers(0, 3, 20) for _ in range(n)],
                             [["a", "b", "c"]] * n, [str(i) for i in range(n)])
    assert visible_axes(fig) == n and len(fig.axes) == 10


def test_training_curves_empty_logs() -> None:
    assert visible_axes(viz.plot_training_curves({})) == 3
