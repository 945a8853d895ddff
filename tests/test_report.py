"""Number tokens in hand-written prose: one reader of dotted keys, formats, render and check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbutils import report


def test_lookup_reads_keys_with_dots_and_list_indices() -> None:
    tree = {"summary": {"recovery.test_acc_pred_coarse": {"mean": 0.885, "values": [0.8, 0.9]}},
            "runs": [{"a": {"b": 1}}, {"a": {"b": 2}}]}
    assert report.lookup(tree, "summary.recovery.test_acc_pred_coarse.mean") == 0.885
    assert report.lookup(tree, "summary.recovery.test_acc_pred_coarse.values.1") == 0.9
    assert report.lookup(tree, "runs.1.a.b") == 2
    for missing in ("summary.recovery.nope", "runs.5.a", "runs.x", "runs.0.a.b.c"):
        with pytest.raises(KeyError):
            report.lookup(tree, missing)


def test_lookup_selects_a_list_item_by_its_setting_whatever_its_position() -> None:
    cells = [{"weight_decay": 0.005, "x": 1}, {"weight_decay": 0.0005, "x": 2},
             {"weight_decay": 5e-05, "x": 3}]
    diffs = [{"weight_decays": [0.005, 0.0005], "d": -1},
             {"weight_decays": [0.0005, 5e-05], "d": -2}]
    tree = {"cells": cells, "differences": diffs}
    assert report.lookup(tree, "cells.weight_decay=5e-4.x") == 2
    assert report.lookup(tree, "cells.weight_decay=0.0005.x") == 2
    assert report.lookup({"cells": cells[1:]}, "cells.weight_decay=5e-4.x") == 2
    assert report.lookup(tree, "differences.weight_decays=5e-4,5e-5.d") == -2
    twice = {"cells": [cells[0], cells[0]]}
    for tree_, missing in ((tree, "cells.weight_decay=1e-3.x"), (tree, "cells.weight_decay=abc.x"),
                           (twice, "cells.weight_decay=5e-3.x"), (tree, "cells.seed=0.x"),
                           (tree, "differences.weight_decays=5e-4.d")):
        with pytest.raises(KeyError):
            report.lookup(tree_, missing)


@pytest.mark.parametrize("fmt, value, text", [
    ("pct", 0.88534, "88.5%"), ("pp", -0.0043, "-0.4"), ("pm", {"mean": 0.874, "sd": 0.019},
                                                         "87.4 ± 1.9%"),
    ("ci", [0.876, 0.895], "[87.6, 89.5]"), ("ci_pp", [-0.009, 0.001], "[-0.9, +0.1]"),
    ("f3", 0.26709, "0.267"), ("g3", 0.0047812, "0.00478"), ("int", 6000, "6,000"),
    ("min", 3750.0, "62.5"), ("t95", {"values": [0.1, 0.2, 0.3]}, "[-4.8, 44.8]"),
    ("t95_f3", {"values": [0.11, 0.12, 0.13]}, "[0.095, 0.145]"),
])
def test_formats(fmt: str, value, text: str) -> None:
    assert report.FORMATS[fmt](value) == text


def _root(tmp_path: Path, value: float) -> Path:
    (tmp_path / "figures" / "cpu").mkdir(parents=True, exist_ok=True)
    (tmp_path / "figures" / "cpu" / "results.json").write_text(
        json.dumps({"recovery": {"test_acc_pred_coarse": value}}))
    return tmp_path


def test_a_token_renders_and_follows_its_file(tmp_path: Path) -> None:
    text = "Recovery (b) is {{cpu:recovery.test_acc_pred_coarse|pct}} on test."
    once = report.render(text, _root(tmp_path, 0.885))
    assert once == ("Recovery (b) is <!--t cpu:recovery.test_acc_pred_coarse|pct-->88.5%"
                    "<!--/t--> on test.")
    assert report.render(once, tmp_path) == once
    assert report.untokenised_numbers(once) == []
    # A value changed under the document: rendering again gives another text.
    again = report.render(once, _root(tmp_path, 0.9))
    assert again != once and "90.0%" in again


def test_a_slash_divides_two_values_of_one_file(tmp_path: Path) -> None:
    (tmp_path / "figures" / "cpu").mkdir(parents=True)
    (tmp_path / "figures" / "cpu" / "results.json").write_text(
        json.dumps({"img_per_s": {"ours": 900.0, "bare": 1000.0, "none": 0.0}}))
    text = report.render("{{cpu:img_per_s.ours/img_per_s.bare|f2}}", tmp_path)
    assert text == "<!--t cpu:img_per_s.ours/img_per_s.bare|f2-->0.90<!--/t-->"
    with pytest.raises(report.TokenError, match="img_per_s.none is 0"):
        report.render("{{cpu:img_per_s.ours/img_per_s.none|f2}}", tmp_path)


def test_a_bad_token_names_what_is_wrong(tmp_path: Path) -> None:
    root = _root(tmp_path, 0.885)
    with pytest.raises(report.TokenError, match="source: unknown 'cpx'"):
        report.render("{{cpx:recovery.x|pct}}", root)
    with pytest.raises(report.TokenError, match="format: unknown 'percent'"):
        report.render("{{cpu:recovery.test_acc_pred_coarse|percent}}", root)
    with pytest.raises(report.TokenError, match="gives no usable value"):
        report.render("{{cpu:recovery.test_acc_true_coarse|pct}}", root)


def test_untokenised_result_numbers_are_found_outside_code_links_and_the_allow_list() -> None:
    text = ("Recovery is 88.5% and NC1 0.267, over 3 seeds of 30 epochs (lr 0.1, the paper's 93%)."
            "\n\n```bash\necho 97.4%\n```\n`0.5` and [a](figures/0.25.png)")
    assert report.untokenised_numbers(text) == ["88.5%", "0.267"]


def test_a_marked_cost_guide_and_versions_are_skipped_and_nothing_else() -> None:
    text = ("On torch 2.11 and Python 3.12 an epoch took 3.96 s.\n\n"
            "<!-- cost-guide:start -->\nAbout 0.06 s per step, 0.94-0.99 of the bare step.\n"
            "<!-- cost-guide:end -->\n\nRecovery 88.5%.\n"
            "<!-- cost-guide:start -->\nunclosed 0.55 s\n")
    assert report.untokenised_numbers(text) == ["3.96", "88.5%", "0.55"]
    # Only a region of the two names is skipped.
    assert report.untokenised_numbers(
        "<!-- notes:start -->\n0.55 s\n<!-- notes:end -->") == ["0.55"]


@pytest.mark.parametrize("fmt, value, text", [
    ("t95_pp", [-0.006, -0.0025, -0.0025], "[-0.9, +0.1]"), ("mean_pct", [0.72, 0.734], "72.7%"),
    ("range_pct", [0.734, 0.72, 0.73], "72.0-73.4%"), ("range_pct", [0.5, 0.5], "50.0%"),
    ("range_int", [210, 195, 200], "195-210"), ("ints", [200, 200, 190], "200, 200, 190"),
    ("pct0", 0.6, "60%"), ("yesno", True, "yes"), ("yesno", False, "no"), ("epoch", None, "none"),
    ("epoch", 16, "16"), ("n", [1, 2, 3], "3"), ("t95_g3", [1.0, 2.0, 3.0], "[-0.484, +4.48]"),
])
def test_formats_over_lists(fmt: str, value, text: str) -> None:
    assert report.FORMATS[fmt](value) == text


def test_a_star_maps_the_rest_of_the_path_over_a_list() -> None:
    tree = {"runs": [{"a": {"b": 1}}, {"a": {"b": 2}}], "h": [{"e": 0}, {"e": 16}]}
    assert report.lookup(tree, "runs.*.a.b") == [1, 2]
    assert report.lookup(tree, "h.-1.e") == 16
    assert report.fill("{{t:runs.*.a.b|range_int}} to {{t:h.-1.e|epoch}}", t=tree) == "1-2 to 16"


def test_fill_reads_a_notebooks_own_results_and_names_a_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"coarse": {"test_acc": 0.832}}))
    assert report.fill("test {{run:coarse.test_acc|pct}}", run=path) == "test 83.2%"
    assert report.fill("test {{run:coarse.test_acc}}", run={"coarse": {"test_acc": 0.5}}) \
        == "test 50.0%"
    with pytest.raises(report.TokenError, match="source 'run' gives no usable value"):
        report.fill("{{run:baseline.test_acc|pct}}", run={"coarse": {}})
    with pytest.raises(report.TokenError, match="format yesno needs true or false"):
        report.fill("{{run:coarse.test_acc|yesno}}", run={"coarse": {"test_acc": 0.5}})


@pytest.mark.parametrize("fmt, value, text", [
    ("pm", {"mean": 0.5, "sd": None}, "50.0%"), ("pm", {"mean": 0.5, "sd": float("nan")}, "50.0%"),
    ("pm_g3", {"mean": 0.6, "sd": 0.0351}, "0.6 ± 0.0351"), ("of", [True, False, True], "2 of 3"),
    ("pct_bare", 0.619, "61.9"),
])
def test_formats_of_entries_with_one_seed(fmt: str, value, text: str) -> None:
    assert report.FORMATS[fmt](value) == text
