"""Analyse any network's features: NC metrics, fine-label recovery and their chance levels.

`analyze_features` takes penultimate features, fine labels and a fine -> super-class map with
arbitrary integer ids, runs the metrics of `docs/protocol.md` section 5 and the recovery of
section 4 on ids remapped to 0..K-1, and reports every per-class number under the caller's ids.
`analyze_features_file` is the same from an npz file (`python -m nbutils analyze-features`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score

from nbutils import checks
from nbutils.collapse import collapse_report
from nbutils.plots import any_network
from nbutils.recovery import CHANCE_OF, chance_levels, group_accuracy, recover_fine_labels
from nbutils.runs import save_json, save_npz

Array = np.ndarray | torch.Tensor
REQUIRED = ("train_features", "train_labels", "test_features", "test_labels")
OPTIONAL = ("test_coarse_pred", "head_weight", "head_bias")
EXPECTED = (
    "expected arrays: train_features (N x D float), train_labels (N ints), test_features "
    "(M x D float), test_labels (M ints), and fine_to_coarse (K ints, entry i = super-class of "
    "fine label i) or fine_ids + coarse_ids (K ints each); optional: test_coarse_pred (M ints), "
    "head_weight (G x D), head_bias (G)"
)
def _as_numpy(name: str, x: Any) -> np.ndarray:
    """A numpy view of a numpy array or torch tensor (low-precision floats widened to float32)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        # numpy has no bfloat16, and float16 would lose the precision NC1 needs.
        x = (x.float() if x.is_floating_point() and x.dtype != torch.float64 else x).numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    return x.astype(np.float32) if x.dtype == np.float16 else x


def parse_fine_to_coarse(fine_to_coarse: Any) -> tuple[np.ndarray, np.ndarray]:
    """(fine ids, coarse id of each) from a {fine: coarse} dict or an array indexed by 0..K-1."""
    if isinstance(fine_to_coarse, Mapping):
        pairs = list(fine_to_coarse.items())
        if not pairs or not all(checks.is_int(f) and checks.is_int(c) for f, c in pairs):
            raise ValueError("fine_to_coarse: a dict must map int fine ids to int super-class "
                             f"ids, e.g. {{7: 0, 10: 0, 13: 1}}; got {fine_to_coarse!r}")
        pairs.sort()
        return (np.array([int(f) for f, _ in pairs], dtype=np.int64),
                np.array([int(c) for _, c in pairs], dtype=np.int64))
    if not isinstance(fine_to_coarse, (np.ndarray, torch.Tensor)):
        fine_to_coarse = np.asarray(fine_to_coarse)
    coarse = _as_numpy("fine_to_coarse", fine_to_coarse)
    if coarse.ndim != 1 or len(coarse) == 0 or not np.issubdtype(coarse.dtype, np.integer):
        raise ValueError("fine_to_coarse must be a {fine: coarse} dict or a non-empty 1-D int "
                         f"array indexed by fine label 0..K-1, got {coarse.dtype} {coarse.shape}")
    return np.arange(len(coarse), dtype=np.int64), coarse.astype(np.int64)


def _numpy(**arrays: Any) -> dict[str, np.ndarray | None]:
    """Each array as numpy (None kept), named in the error when it is neither numpy nor torch."""
    return {name: None if x is None else _as_numpy(name, x) for name, x in arrays.items()}


def _finite(value: Any) -> Any:
    """NaN -> None, recursively, so that results are valid JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _by_id(values: list[Any], ids: np.ndarray) -> dict[int, Any]:
    """A per-class list (0-based order) as {original id: value}."""
    return {int(i): v for i, v in zip(ids, values, strict=True)}


def _nmi_by_superclass(train_fine: np.ndarray, rec: np.ndarray, f2c: np.ndarray) -> list:
    """NMI of true vs reconstructed fine labels inside each super-class; None for one class."""
    sizes = np.bincount(f2c)
    return [float(normalized_mutual_info_score(train_fine[f2c[train_fine] == s],
                                               rec[f2c[train_fine] == s]))
            if sizes[s] > 1 else None for s in range(len(sizes))]


def _nc_section(report: dict[str, dict], coarse_ids: np.ndarray, f2c: np.ndarray) -> dict:
    """collapse_report keyed by coarse id; one-class super-classes None and out of the means."""
    fine = dict(report["fine_structure"])
    single = np.bincount(f2c) == 1
    for key in ("nc1_within_superclass", "fine_variance_fraction"):
        values = [None if one else v for v, one in zip(_finite(fine[key]), single, strict=True)]
        defined = [v for v in values if v is not None]
        fine[key] = _by_id(values, coarse_ids)
        fine[f"{key}_mean"] = float(np.mean(defined)) if defined else None
    return _finite({"coarse": report["coarse"], "fine": report["fine"], "fine_structure": fine})


def analyze_features(
    train_features: Array,
    train_labels: Array,
    test_features: Array,
    test_labels: Array,
    fine_to_coarse: Mapping[int, int] | Array | list[int],
    test_coarse_pred: Array | None = None,
    head_weight: Array | None = None,
    head_bias: Array | None = None,
    n_init: int = 10,
    seed: int = 0,
    feature_norm: str = "l2",
) -> dict[str, Any]:
    """NC metrics, fine-label recovery (a)/(b) and chance levels of any network's features.

    Labels are fine-class ids as in `fine_to_coarse`: a {fine: coarse} dict over any integers,
    or an array whose entry i is the super-class of fine label i. A super-class may hold any
    number of fine classes; one holding a single class is recovered trivially (its images count
    as right under (a), chance 1 there) and its within-super-class NMI, NC1 and fine variance
    fraction are None, left out of their means. `test_coarse_pred` (super-class ids, e.g. the
    network's predictions) adds variants (b) and (d); `head_weight` / `head_bias` (one row per
    super-class, ascending id) add NC3, NC4 and the head's equinorm. NC metrics use the raw
    train features (`docs/protocol.md` section 5) and have no chance level; recovery normalises
    them by `feature_norm` (section 4); "chance" holds the level of each recovery number (see
    `chance_levels`). All but "labels" (arrays in the caller's fine ids) is JSON-ready;
    per-class numbers are keyed by the caller's ids.
    """
    given = _numpy(train_features=train_features, train_labels=train_labels,
                   test_features=test_features, test_labels=test_labels,
                   test_coarse_pred=test_coarse_pred, head_weight=head_weight,
                   head_bias=head_bias)
    train_x = checks.feature_matrix("train_features", given["train_features"])
    test_x = checks.feature_matrix("test_features", given["test_features"], train_x.shape[1])
    fine_ids, coarse_of = parse_fine_to_coarse(fine_to_coarse)
    coarse_ids = np.unique(coarse_of)
    if len(coarse_ids) < 2:
        raise ValueError(f"fine_to_coarse must name at least 2 super-classes, got "
                         f"{coarse_ids.tolist()}")
    f2c = np.searchsorted(coarse_ids, coarse_of)
    train_y = checks.label_positions("train_labels", given["train_labels"], len(train_x),
                                     fine_ids, "fine_to_coarse")
    test_y = checks.label_positions("test_labels", given["test_labels"], len(test_x), fine_ids,
                                    "fine_to_coarse")
    absent = fine_ids[np.bincount(train_y, minlength=len(fine_ids)) == 0]
    if len(absent):
        raise ValueError(f"train_labels: fine class(es) {absent.tolist()} of fine_to_coarse "
                         "have no samples; every listed class needs train samples")
    pred = None if test_coarse_pred is None else checks.label_positions(
        "test_coarse_pred", given["test_coarse_pred"], len(test_x), coarse_ids,
        "the super-class ids")
    weight, bias = checks.coarse_head(given["head_weight"], given["head_bias"], len(coarse_ids),
                                      train_x.shape[1])
    checks.kmeans_options(n_init, seed, feature_norm)

    report = collapse_report(train_x, train_y, f2c, "coarse", weight, bias)
    rec = recover_fine_labels(train_x, train_y, test_x, test_y, f2c, test_coarse_pred=pred,
                              n_init=int(n_init), seed=int(seed), feature_norm=feature_norm)
    return _assemble(rec, report, fine_ids, coarse_ids, f2c, train_y, test_y, pred,
                     {"n_init": int(n_init), "seed": int(seed), "feature_norm": feature_norm})


def _assemble(rec: Any, report: dict, fine_ids: np.ndarray, coarse_ids: np.ndarray,
              f2c: np.ndarray, train_y: np.ndarray, test_y: np.ndarray,
              pred: np.ndarray | None, settings: dict[str, Any]) -> dict[str, Any]:
    """The result dict, every per-class number keyed by the caller's ids."""
    k, g = len(fine_ids), len(coarse_ids)
    b = rec.test_pred_pred_coarse
    recovery = {key: v for key, v in rec.metrics.items() if not key.startswith("per_")}
    nmi_per = _nmi_by_superclass(train_y, rec.train_reconstructed, f2c)
    defined = [v for v in nmi_per if v is not None]
    recovery["nmi_within_superclass"] = float(np.mean(defined)) if defined else None
    recovery["per_superclass"] = _by_id(rec.metrics["per_superclass"], coarse_ids)
    recovery["per_superclass_train"] = _by_id(rec.metrics["per_superclass_train"], coarse_ids)
    recovery["per_superclass_pred_coarse"] = None if b is None else _by_id(
        group_accuracy(b == test_y, f2c[test_y], g), coarse_ids)
    recovery["nmi_per_superclass"] = _by_id(nmi_per, coarse_ids)
    levels = chance_levels(train_y, test_y, f2c, pred)
    chance = {key: levels[CHANCE_OF[key]] for key in recovery if key in CHANCE_OF}
    chance["fine_uniform"] = levels["fine_uniform"]
    chance["per_superclass"] = _by_id([1.0 / m for m in np.bincount(f2c)], coarse_ids)
    per_fine = {
        "superclass": _by_id(coarse_ids[f2c].tolist(), fine_ids),
        "n_train": _by_id(np.bincount(train_y, minlength=k).tolist(), fine_ids),
        "n_test": _by_id(np.bincount(test_y, minlength=k).tolist(), fine_ids),
        "train_cluster_acc": _by_id(
            group_accuracy(rec.train_reconstructed == train_y, train_y, k), fine_ids),
        "test_acc_true_coarse": _by_id(
            group_accuracy(rec.test_pred_true_coarse == test_y, test_y, k), fine_ids),
        "test_acc_pred_coarse": None if b is None else _by_id(
            group_accuracy(b == test_y, test_y, k), fine_ids),
    }
    return {
        "n_train": len(train_y), "n_test": len(test_y), "settings": settings,
        "fine_to_coarse": _by_id(coarse_ids[f2c].tolist(), fine_ids),
        "nc": _nc_section(report, coarse_ids, f2c),
        "recovery": recovery, "chance": chance, "per_fine_class": per_fine,
        "labels": {
            "train_reconstructed": fine_ids[rec.train_reconstructed],
            "test_pred_true_coarse": fine_ids[rec.test_pred_true_coarse],
            "test_pred_pred_coarse": None if b is None else fine_ids[b],
        },
    }


def load_features_file(path: str | os.PathLike) -> dict[str, Any]:
    """The keyword arguments of `analyze_features` stored in an npz file, or one-line ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist; {EXPECTED}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except Exception as err:  # zipfile, format and OS errors all mean an unreadable file here
        raise ValueError(f"{path} is not a readable npz file ({type(err).__name__}); "
                         f"{EXPECTED}") from err
    has_pair = "fine_ids" in arrays and "coarse_ids" in arrays
    missing = [k for k in REQUIRED if k not in arrays]
    if "fine_to_coarse" not in arrays and not has_pair:
        missing.append("fine_to_coarse (or fine_ids + coarse_ids)")
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; {EXPECTED}")
    kwargs = {k: arrays[k] for k in (*REQUIRED, *OPTIONAL) if k in arrays}
    if "fine_to_coarse" in arrays:
        kwargs["fine_to_coarse"] = arrays["fine_to_coarse"]
    else:
        fine, coarse = arrays["fine_ids"], arrays["coarse_ids"]
        if fine.shape != coarse.shape or fine.ndim != 1:
            raise ValueError(f"{path}: fine_ids and coarse_ids must be 1-D of one length, got "
                             f"{fine.shape} and {coarse.shape}; {EXPECTED}")
        kwargs["fine_to_coarse"] = {f: c for f, c in zip(fine.tolist(), coarse.tolist(),
                                                         strict=True)}
        if len(kwargs["fine_to_coarse"]) != len(fine):
            raise ValueError(f"{path}: fine_ids must not repeat an id")
    return kwargs


def default_out(path: str | os.PathLike) -> Path:
    """Where the analysis of features file `path` goes by default: FILE_analysis beside it."""
    return Path(path).with_name(Path(path).stem + "_analysis")


def write_outputs(result: dict[str, Any], test_labels: Array, out: str | os.PathLike,
                  source: str | os.PathLike | None = None) -> list[Path]:
    """results.json (all but the labels), labels.npz and the figures of one result under `out`."""
    out = Path(out)
    labels = {k: v for k, v in result["labels"].items() if v is not None}
    record = {k: v for k, v in result.items() if k != "labels"}
    written = [save_json(out / "results.json", {"source": source and str(source), **record}),
               save_npz(out / "labels.npz", **labels)]
    return written + any_network.save_figures(result, _as_numpy("test_labels", test_labels),
                                             out)


def analyze_features_file(path: str | os.PathLike, out: str | os.PathLike | None = None,
                          n_init: int = 10, seed: int = 0,
                          feature_norm: str = "l2") -> tuple[dict[str, Any], Path]:
    """Analyse an npz features file; write results.json, labels.npz and figures under `out`."""
    kwargs = load_features_file(path)
    result = analyze_features(**kwargs, n_init=n_init, seed=seed, feature_norm=feature_norm)
    out = Path(out) if out is not None else default_out(path)
    write_outputs(result, kwargs["test_labels"], out, path)
    return result, out


def summary_rows(result: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(recovery number, value, chance level) for each number that was computed."""
    rec, chance = result["recovery"], result["chance"]
    return [(k, rec[k], chance[k]) for k in CHANCE_OF if rec.get(k) is not None]


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The headline numbers beside their chance levels, one per line."""
    lines = [f"{k:30s} {v:.4f}   chance {c:.4f}" for k, v, c in summary_rows(result)]
    nc1 = [result["nc"][level]["nc1"] for level in ("coarse", "fine")]
    return lines + [f"{'nc1 coarse / fine':30s} " + " / ".join(f"{v:.4g}" if v is not None
                                                               else "-" for v in nc1)]
