"""The README's results table is exactly what the committed results files give."""

from __future__ import annotations

from pathlib import Path

from nbutils.results import README_END, README_START, readme_table

REPO = Path(__file__).resolve().parents[1]


def test_readme_table_matches_committed_results() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split(README_START, 1)[1].split(README_END, 1)[0]
    assert section.strip() == readme_table(REPO / "figures").strip(), (
        "README results table is stale: run `python -m nbutils readme`"
    )
