"""The figures of any network's features, as your_features.analyze_features analysed them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nbutils.plots import charts


def save_figures(result: dict[str, Any], test_labels: np.ndarray, out: Path) -> list[Path]:
    """Confusion matrix of the (a) labels and per-super-class recovery against chance."""
    fine_ids = np.array(list(result["fine_to_coarse"]))
    names = [f"{f} (s{c})" for f, c in result["fine_to_coarse"].items()]
    true = np.searchsorted(fine_ids, test_labels)
    pred = np.searchsorted(fine_ids, result["labels"]["test_pred_true_coarse"])
    confusion = charts.plot_confusion(true, pred, names,
                                      title="recovered fine labels, (a) true super-class")
    rec, coarse = result["recovery"], list(result["chance"]["per_superclass"])
    rows = {"train clustering": rec["per_superclass_train"], "test (a)": rec["per_superclass"],
            "test (b)": rec["per_superclass_pred_coarse"],
            "chance (1/m)": result["chance"]["per_superclass"]}
    values = [[np.nan if v[s] is None else v[s] for s in coarse]
              for v in rows.values() if v is not None]
    bars = charts.plot_grid_heatmap(np.array(values),
                                    [k for k, v in rows.items() if v is not None], coarse,
                                    "recovery per super-class", xlabel="super-class")
    charts.save_fig(confusion, out / "figures", "confusion_a")
    charts.save_fig(bars, out / "figures", "per_superclass")
    return [out / "figures" / "confusion_a.png", out / "figures" / "per_superclass.png"]
