"""Every figure and table of the package, and the one helper that saves a figure.

- `charts`: generic plots (training curves, NC metrics, recovery, confusion matrix, UMAP), one
  style and colour scheme, and `save_fig`, which every notebook and command saves through;
- `run`: the figures of one run, titled with its profile, width, epochs and seed;
- `experiments`: the figures of notebooks 06-10;
- `tables`: configurations, logs and metrics as DataFrames, and markdown output.
"""

from nbutils.plots.charts import save_fig, set_style
from nbutils.plots.experiments import (
    dynamics_figures,
    grid_figures,
    hierarchy_figures,
    split_figures,
    synthetic_figures,
)
from nbutils.plots.pairs import pair_figures as pair_figures
from nbutils.plots.run import (
    confusion_figure,
    nc_figure,
    recovery_figure,
    render_run,
    results_figure,
    training_curves,
    umap_figures,
    variants_figure,
)
from nbutils.plots.tables import (
    config_frame,
    controls_frame,
    files_frame,
    log_frame,
    mapping_frame,
    markdown,
    nc_frame,
    recovery_frame,
)

__all__ = [
    "config_frame",
    "confusion_figure",
    "controls_frame",
    "dynamics_figures",
    "files_frame",
    "grid_figures",
    "hierarchy_figures",
    "log_frame",
    "mapping_frame",
    "markdown",
    "nc_figure",
    "nc_frame",
    "recovery_figure",
    "recovery_frame",
    "render_run",
    "results_figure",
    "save_fig",
    "set_style",
    "split_figures",
    "synthetic_figures",
    "training_curves",
    "umap_figures",
    "variants_figure",
]
