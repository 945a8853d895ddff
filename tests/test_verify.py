"""`nbutils verify`: the committed files agree with what they were computed from, and a number
changed under them is caught, naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nbutils import verify
from nbutils.__main__ import main
from nbutils.paths import FIGURES_DIR, REPO


@pytest.fixture
def copy(tmp_path: Path) -> tuple[Path, Path]:
    """The repository's figures/ and README in a scratch folder."""
    shutil.copytree(FIGURES_DIR, tmp_path / "figures")
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    return tmp_path / "figures", tmp_path / "README.md"


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_the_committed_repository_verifies(capsys: pytest.CaptureFixture) -> None:
    counts = verify.counts()
    assert counts["with compact.npz"] >= 4 and counts["archived experiment runs"] >= 30
    assert main(["verify"]) == 0
    assert "mismatch" not in capsys.readouterr().out


def test_a_recovery_number_changed_under_its_compact_file_is_caught(copy) -> None:
    figures, readme = copy
    _edit(figures / "cpu" / "seeds" / "seed1" / "results.json",
          lambda r: r["recovery"].update(test_acc_pred_coarse=0.5))
    found = verify.verify(figures, readme)
    assert len(found["recovery from compact.npz"]) == 1
    assert "seeds/seed1/results.json: recovery.test_acc_pred_coarse is 0.5" in \
        found["recovery from compact.npz"][0]
    # The seeds summary and the index were built from the old value: both now disagree.
    assert any("recovery.test_acc_pred_coarse.mean" in m for m in found["seeds.json"])
    assert found["runs.csv"]


def test_a_terminal_phase_flag_that_its_curve_does_not_give_is_caught(copy) -> None:
    figures, readme = copy
    path = sorted((figures / "experiments" / "runs" / "tpt").glob("*/results.json"))[0]
    _edit(path, lambda r: r["terminal_phase"].update(reached=not r["terminal_phase"]["reached"]))
    found = verify.verify(figures, readme)
    assert len(found["terminal phase"]) == 1
    assert found["terminal phase"][0].startswith(str(path))
    assert "terminal_phase.reached" in found["terminal phase"][0]


def test_a_readme_table_out_of_date_is_caught(copy) -> None:
    figures, readme = copy
    _edit(figures / "cpu" / "results.json", lambda r: r["coarse"].update(test_acc=0.123))
    found = verify.verify(figures, readme)
    # The README shows the seeds summary, which is now older than seed 0's results.
    assert found["README table"] and "README.md" in found["README table"][0]
    assert found["seeds.json"]


def test_an_over_seeds_file_that_its_seeds_do_not_give_is_caught(copy, tmp_path: Path) -> None:
    figures, readme = copy
    profile = figures / "full"
    runs = [profile, *sorted(p.parent for p in profile.glob("seeds/*/results.json"))]
    assert main(["seeds", *map(str, runs), "--out", str(profile / "seeds.json")]) == 0
    assert verify.check_over_seeds(profile) == []
    _edit(profile / "phase_change.json",
          lambda r: r["measures"]["nc.coarse.nc1"]["change"].__setitem__(0, 0.5))
    _edit(profile / "pairs_seeds.json", lambda r: r["pairs"][1].pop("merged"))
    found = verify.verify(figures, readme)["over-seeds files"]
    assert len(found) == 2
    assert "full/phase_change.json: measures.nc.coarse.nc1.change.0 differs" in found[0]
    assert "full/pairs_seeds.json: pairs.1.merged differs" in found[1]
