"""Every figure and table of the package, and the one helper that saves a figure.

- `charts`: generic plots (training curves, NC metrics, recovery, confusion matrix, UMAP), one
  style and colour scheme, and `save_fig`, which every notebook and command saves through;
- `run`: the figures of one run, titled with its profile, width, epochs and seed;
- `experiments`: the figures of notebooks 06-10 and 12;
- `pairs`: the figures of the merged pairs beside their controls (notebook 08);
- `any_network`: the figures of any network's analysed features (notebook 11);
- `tables`: configurations, logs, metrics and experiment summaries as DataFrames, and markdown
  output.
"""

from nbutils.plots.charts import save_fig, set_style
from nbutils.plots.experiments import (
    dynamics_figures,
    grid_figures,
    hierarchy_figures,
    split_figures,
    strength_figures,
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
    axis_frame,
    change_frame,
    config_frame,
    controls_frame,
    correlation_frame,
    difference_frame,
    files_frame,
    grid_frame,
    group_frame,
    log_frame,
    mapping_frame,
    markdown,
    nc_frame,
    onset_frame,
    pair_frame,
    phase_frame,
    recovery_frame,
    separation_frame,
    strength_frame,
    strength_pairs_frame,
    synthetic_runs_frame,
)

__all__ = [
    "axis_frame",
    "change_frame",
    "config_frame",
    "confusion_figure",
    "controls_frame",
    "correlation_frame",
    "difference_frame",
    "dynamics_figures",
    "files_frame",
    "grid_figures",
    "grid_frame",
    "group_frame",
    "hierarchy_figures",
    "log_frame",
    "mapping_frame",
    "markdown",
    "nc_figure",
    "nc_frame",
    "onset_frame",
    "pair_frame",
    "phase_frame",
    "recovery_figure",
    "recovery_frame",
    "render_run",
    "results_figure",
    "save_fig",
    "separation_frame",
    "strength_frame",
    "strength_pairs_frame",
    "set_style",
    "split_figures",
    "strength_figures",
    "synthetic_figures",
    "synthetic_runs_frame",
    "training_curves",
    "umap_figures",
    "variants_figure",
]
