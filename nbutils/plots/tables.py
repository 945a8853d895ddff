"""Tables for the notebooks: configs, logs and metrics as pandas DataFrames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown

from nbutils.config import RunConfig
from nbutils.data import mapping_table


def config_frame(cfg: RunConfig) -> pd.DataFrame:
    """Every parameter of a run, one row each."""
    rows = [(k, repr(v)) for k, v in cfg.to_dict().items()]
    return pd.DataFrame(rows, columns=["parameter", "value"]).set_index("parameter")


def mapping_frame(fine_to_coarse: np.ndarray, names: list[str]) -> pd.DataFrame:
    """One row per super-class: the fine classes it merges."""
    table = mapping_table(fine_to_coarse, names)
    return pd.DataFrame({"fine classes": [" + ".join(v) for v in table.values()]},
                        index=pd.Index(list(table), name="super-class"))


def log_frame(log: list[dict]) -> pd.DataFrame:
    """A per-epoch training log."""
    return pd.DataFrame(log).set_index("epoch") if log else pd.DataFrame()


def files_frame(paths: list[Path]) -> pd.DataFrame:
    """Files with their sizes in MiB."""
    return pd.DataFrame(
        [(str(p), round(Path(p).stat().st_size / 2**20, 2)) for p in paths],
        columns=["file", "MiB"],
    )


def nc_frame(history: list[dict]) -> pd.DataFrame:
    """Collapse metrics over checkpoints, columns `<labels>/<metric>`."""
    rows = []
    for h in history:
        row = {"epoch": h["epoch"], "train_acc": h["train_acc"], "test_acc": h["test_acc"]}
        for level in ("coarse", "fine"):
            row.update({f"{level}/{k}": v for k, v in h["nc"][level].items()})
        fs = h["nc"]["fine_structure"]
        row["within-superclass NC1"] = fs["nc1_within_superclass_mean"]
        row["fine variance fraction"] = fs["fine_variance_fraction_mean"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("epoch")


def recovery_frame(history: list[dict]) -> pd.DataFrame:
    """Recovery metrics over checkpoints (per-super-class lists left out)."""
    rows = [{"epoch": h["epoch"], **{k: v for k, v in h["recovery"].items()
                                     if not isinstance(v, list)}} for h in history]
    return pd.DataFrame(rows).set_index("epoch")


def controls_frame(controls: dict[str, dict]) -> pd.DataFrame:
    """Control recoveries side by side."""
    return pd.DataFrame({name: {k: v for k, v in m.items() if not isinstance(v, list)}
                         for name, m in controls.items()})


def markdown(text: str) -> Markdown:
    """Rich markdown output in Jupyter (plain text elsewhere)."""
    return Markdown(text)
