"""analyze_features: closed-form cases, any label ids, uneven super-classes, bad input, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nbutils.__main__ import main
from nbutils.recovery import chance_levels
from nbutils.your_features import analyze_features

PAIRS = np.arange(10) % 5  # fine i -> super-class i mod 5, as the mod5 mapping


def blobs(centres: dict[int, np.ndarray], n: int, spread: float,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n float32 points around each centre (isotropic Gaussian), labelled by the centre's id."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(list(centres), n)
    points = np.stack([centres[f] for f in labels])
    points = points + spread * rng.normal(size=points.shape)
    return points.astype(np.float32), labels.astype(np.int64)


def separated(ids: list[int], dim: int = 12, seed: int = 0) -> dict[int, np.ndarray]:
    """One far-apart random centre per fine id."""
    rng = np.random.default_rng(seed)
    return {f: 10 * rng.normal(size=dim) for f in ids}


def dataset(centres: dict[int, np.ndarray], spread: float = 0.1, n_train: int = 30,
            n_test: int = 15) -> dict[str, np.ndarray]:
    """Train and test splits drawn around the same centres."""
    train_x, train_y = blobs(centres, n_train, spread, 1)
    test_x, test_y = blobs(centres, n_test, spread, 2)
    return {"train_features": train_x, "train_labels": train_y,
            "test_features": test_x, "test_labels": test_y}


def coarse_pred(test_labels: np.ndarray, f2c: dict[int, int]) -> np.ndarray:
    """The true super-class of every test image."""
    return np.array([f2c[int(f)] for f in test_labels])


def test_separated_fine_clusters_are_recovered_exactly() -> None:
    data = dataset(separated(list(range(10))))
    res = analyze_features(**data, fine_to_coarse=PAIRS,
                           test_coarse_pred=PAIRS[data["test_labels"]], n_init=2)
    rec, chance = res["recovery"], res["chance"]
    for key in ("train_cluster_acc", "test_acc_true_coarse", "test_acc_pred_coarse", "nmi",
                "ari", "nmi_within_superclass", "linear_probe_test_acc"):
        assert rec[key] == pytest.approx(1.0), key
    assert chance["test_acc_true_coarse"] == chance["train_cluster_acc"] == 0.5
    assert chance["test_acc_pred_coarse"] == 0.5 and chance["fine_uniform"] == 0.1
    # Balanced pairs: NMI = H(S) / H(F) = log 5 / log 10, ARI = 4/9 (see chance_levels).
    assert chance["nmi"] == pytest.approx(math.log(5) / math.log(10))
    assert chance["ari"] == pytest.approx(4 / 9)
    assert res["nc"]["fine"]["nc1"] < 1e-3 and res["nc"]["coarse"]["nc1"] > 0
    json.dumps({k: v for k, v in res.items() if k != "labels"}, allow_nan=False)


def test_identical_fine_classes_score_about_chance() -> None:
    coarse_centres = separated(list(range(5)))
    centres = {f: coarse_centres[f % 5] for f in range(10)}
    data = dataset(centres, spread=1.0, n_train=150, n_test=100)
    rec = analyze_features(**data, fine_to_coarse=PAIRS, n_init=2)["recovery"]
    # Hungarian matching on the train labels lifts train clustering a little above 1/2.
    assert 0.5 <= rec["train_cluster_acc"] < 0.6
    assert abs(rec["test_acc_true_coarse"] - 0.5) < 0.06
    assert rec["nmi_within_superclass"] < 0.03
    assert rec["test_acc_pred_coarse"] is None


def test_arbitrary_ids_are_reported_under_the_callers_ids() -> None:
    f2c = {7: 3, 10: 3, 13: 9, 21: 9, 40: -2, 41: -2}
    data = dataset(separated(list(f2c)))
    res = analyze_features(**data, fine_to_coarse=f2c,
                           test_coarse_pred=coarse_pred(data["test_labels"], f2c), n_init=2)
    assert list(res["recovery"]["per_superclass"]) == [-2, 3, 9]
    assert list(res["per_fine_class"]["test_acc_true_coarse"]) == [7, 10, 13, 21, 40, 41]
    assert res["fine_to_coarse"] == f2c
    assert set(res["nc"]["fine_structure"]["nc1_within_superclass"]) == {-2, 3, 9}
    np.testing.assert_array_equal(res["labels"]["test_pred_true_coarse"], data["test_labels"])
    assert res["recovery"]["test_acc_pred_coarse"] == 1.0

    # The same problem with ids 0..5 gives the same numbers.
    dense = {f: i for i, f in enumerate(f2c)}
    remapped = {**data, "train_labels": np.array([dense[f] for f in data["train_labels"]]),
                "test_labels": np.array([dense[f] for f in data["test_labels"]])}
    again = analyze_features(**remapped, fine_to_coarse=np.array([1, 1, 2, 2, 0, 0]), n_init=2)
    assert again["recovery"]["nmi"] == res["recovery"]["nmi"]
    assert again["nc"]["fine"] == res["nc"]["fine"]


def test_uneven_superclasses_and_a_one_class_superclass() -> None:
    f2c = {0: 0, 1: 0, 2: 0, 3: 1}
    rng = np.random.default_rng(5)
    data = dataset({0: rng.normal(size=12) * 10, 1: rng.normal(size=12) * 10,
                    2: rng.normal(size=12) * 10, 3: rng.normal(size=12) * 10})
    res = analyze_features(**data, fine_to_coarse=f2c, n_init=2)
    rec, chance = res["recovery"], res["chance"]
    assert rec["per_superclass"] == {0: 1.0, 1: 1.0}
    assert chance["per_superclass"] == {0: pytest.approx(1 / 3), 1: 1.0}
    # Test images weigh equally: three classes at 1/3 and one at 1.
    assert chance["test_acc_true_coarse"] == pytest.approx((3 * 1 / 3 + 1) / 4)
    assert rec["nmi_per_superclass"][1] is None and rec["nmi_within_superclass"] == 1.0
    structure = res["nc"]["fine_structure"]
    assert structure["nc1_within_superclass"][1] is None
    assert structure["fine_variance_fraction"][1] is None
    assert structure["fine_variance_fraction_mean"] == structure["fine_variance_fraction"][0]


def test_torch_input_gives_the_numpy_result() -> None:
    data = dataset(separated(list(range(6))), spread=2.0)
    f2c = np.array([0, 0, 1, 1, 2, 2])
    head = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    want = analyze_features(**data, fine_to_coarse=f2c, head_weight=head, n_init=2)
    got = analyze_features(**{k: torch.from_numpy(v) for k, v in data.items()},
                           fine_to_coarse=torch.from_numpy(f2c),
                           head_weight=torch.from_numpy(head).to(torch.bfloat16).float(),
                           n_init=2)
    assert got["recovery"] == want["recovery"]
    assert got["nc"]["fine"]["nc1"] == pytest.approx(want["nc"]["fine"]["nc1"])
    assert "nc3" in got["nc"]["coarse"] and "nc4" in got["nc"]["coarse"]


def test_chance_of_b_counts_wrong_super_classes_as_misses() -> None:
    f2c = np.array([0, 0, 1, 1])
    test = np.array([0, 1, 2, 3])
    pred = np.array([0, 0, 1, 0])  # the last image goes to the wrong super-class
    levels = chance_levels(test, test, f2c, pred)
    assert levels["within_predicted_superclass_test"] == pytest.approx(3 * 0.5 / 4)


def bad_cases() -> list[tuple[dict, str]]:
    """(changes to a valid call, message pattern) for every rejected input."""
    x = np.zeros((4, 3), dtype=np.float32)
    return [
        ({"train_features": x[:, 0]}, r"train_features must be a non-empty 2-D float array"),
        ({"train_features": x.astype(int)}, r"train_features must be a non-empty 2-D float"),
        ({"train_features": np.full((8, 3), np.nan, np.float32)}, r"train_features must be finite"),
        ({"test_features": np.zeros((4, 5), np.float32)}, r"test_features must have D = 3"),
        ({"train_labels": np.zeros(3, int)}, r"train_labels must be a 1-D int array of length 8"),
        ({"train_labels": np.zeros(8)}, r"train_labels must be a 1-D int array"),
        ({"test_labels": np.array([0, 1, 2, 99])}, r"test_labels: label\(s\) \[99\] not in"),
        ({"train_labels": np.array([0, 0, 1, 1, 2, 2, 2, 2])},
         r"fine class\(es\) \[3\] of fine_to_coarse have no samples"),
        ({"fine_to_coarse": {}}, r"fine_to_coarse: a dict must map int"),
        ({"fine_to_coarse": {0.5: 0}}, r"fine_to_coarse: a dict must map int"),
        ({"fine_to_coarse": np.array([0.0, 0, 1, 1])}, r"fine_to_coarse must be a"),
        ({"fine_to_coarse": "mod5"}, r"fine_to_coarse must be a"),
        ({"fine_to_coarse": [0, 0, 0, 0]}, r"at least 2 super-classes"),
        ({"test_coarse_pred": np.array([0, 1, 5, 1])}, r"test_coarse_pred: label\(s\) \[5\]"),
        ({"test_coarse_pred": np.array([0, 1])}, r"test_coarse_pred must be a 1-D int array"),
        ({"head_weight": np.zeros((3, 3))}, r"head_weight must have shape \(2, 3\)"),
        ({"head_weight": np.zeros((2, 4))}, r"head_weight must have D = 3"),
        ({"head_bias": np.zeros(2)}, r"head_bias needs head_weight"),
        ({"head_weight": np.zeros((2, 3)), "head_bias": np.zeros(3)}, r"head_bias must be a"),
        ({"n_init": 0}, r"n_init must be an int >= 1"),
        ({"seed": -1}, r"seed must be an int >= 0"),
        ({"feature_norm": "max"}, r"feature_norm must be one of"),
        ({"train_features": [[0.0]]}, r"train_features must be a numpy array or torch tensor"),
    ]


@pytest.mark.parametrize(("change", "pattern"), bad_cases())
def test_bad_input_is_rejected_naming_the_parameter(change: dict, pattern: str) -> None:
    rng = np.random.default_rng(0)
    valid = {"train_features": rng.normal(size=(8, 3)).astype(np.float32),
             "train_labels": np.array([0, 0, 1, 1, 2, 2, 3, 3]),
             "test_features": rng.normal(size=(4, 3)).astype(np.float32),
             "test_labels": np.array([0, 1, 2, 3]), "fine_to_coarse": [0, 0, 1, 1]}
    with pytest.raises(ValueError, match=pattern):
        analyze_features(**{**valid, **change})


def test_cli_writes_results_and_figures(tmp_path: Path) -> None:
    f2c = {7: 0, 10: 0, 13: 1, 21: 1, 30: 1}
    data = dataset(separated(list(f2c)))
    path = tmp_path / "mine.npz"
    np.savez(path, **data, fine_ids=np.array(list(f2c)), coarse_ids=np.array(list(f2c.values())),
             test_coarse_pred=coarse_pred(data["test_labels"], f2c))
    out = tmp_path / "out"
    assert main(["analyze-features", str(path), "--out", str(out), "--n-init", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["recovery"]["test_acc_pred_coarse"] == 1.0
    assert res["recovery"]["per_superclass"] == {"0": 1.0, "1": 1.0}
    assert res["chance"]["per_superclass"]["1"] == pytest.approx(1 / 3)
    for name in ("confusion_a", "per_superclass"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    with np.load(out / "labels.npz") as labels:
        np.testing.assert_array_equal(labels["test_pred_true_coarse"], data["test_labels"])


def test_cli_default_out_and_array_map(tmp_path: Path) -> None:
    data = dataset(separated(list(range(4))))
    path = tmp_path / "feats.npz"
    np.savez(path, **data, fine_to_coarse=np.array([0, 0, 1, 1]))
    assert main(["analyze-features", str(path), "--n-init", "1", "--feature-norm", "none"]) == 0
    res = json.loads((tmp_path / "feats_analysis" / "results.json").read_text())
    assert res["settings"] == {"n_init": 1, "seed": 0, "feature_norm": "none"}


@pytest.mark.parametrize(("arrays", "pattern"), [
    ({"train_features": np.zeros((4, 3), np.float32)},
     "lacks train_labels, test_features, test_labels, fine_to_coarse (or fine_ids + coarse_ids)"),
    ({"fine_ids": np.array([0, 1]), "coarse_ids": np.array([0])}, "fine_ids and coarse_ids"),
])
def test_cli_names_what_is_missing_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               arrays: dict, pattern: str) -> None:
    path = tmp_path / "bad.npz"
    full = {**dataset(separated([0, 1])), **arrays} if "fine_ids" in arrays else arrays
    np.savez(path, **full)
    assert main(["analyze-features", str(path)]) == 2
    err = capsys.readouterr().err
    assert pattern in err and "expected arrays: train_features (N x D float)" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["missing.npz"], ["not.npz"], ["ok.npz", "--seed", "-3"]])
def test_cli_bad_file_or_option_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        args: list[str]) -> None:
    (tmp_path / "not.npz").write_text("plain text")
    np.savez(tmp_path / "ok.npz", **dataset(separated([0, 1, 2, 3])),
             fine_to_coarse=np.array([0, 0, 1, 1]))
    code = main(["analyze-features", str(tmp_path / args[0]), *args[1:]])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
