"""The user documents: number tokens in step with the results files, links that resolve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nbutils import report

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
USER_DOCS = [REPO / "README.md", *DOCS]
PROTOCOL_SECTIONS = (
    "1-the-claim", "2-data-and-coarse-mappings", "3-model-and-training",
    "4-recovering-the-fine-labels", "5-neural-collapse-metrics", "6-figures", "7-profiles",
    "8-measured-costs", "9-targets", "10-resultsjson", "11-terminal-phase-seeds-and-controls",
)
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Internal history that does not belong in a user's document.
FORBIDDEN = (re.compile(r"\bSPEC\b"), re.compile(r"\bissues? #?\d"), re.compile(r"device loan"),
             re.compile(r"\blent\b"), re.compile(r"shared folder"), re.compile(r"\.\./shared"),
             re.compile(r"end to end"), re.compile(r"0\.98 of its baseline"))


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of every heading of a markdown file."""
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines()
            if line.startswith("#")}


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_number_token_is_up_to_date(doc: Path) -> None:
    text = doc.read_text()
    assert report.render(text) == text, (
        f"{doc.name}: a number token is stale or not yet rendered: run python -m nbutils readme")


@pytest.mark.parametrize("name", report.TOKENISED)
def test_tokenised_documents_state_no_number_by_hand(name: str) -> None:
    found = report.untokenised_numbers((REPO / name).read_text())
    assert not found, (f"{name}: result-like numbers outside a {{{{source:path|format}}}} "
                       f"token: {found}")


def test_protocol_sections_are_numbered_as_cited() -> None:
    headings = [line for line in (REPO / "docs" / "protocol.md").read_text().splitlines()
                if line.startswith("## ")]
    assert [slug(h.lstrip("#")) for h in headings] == list(PROTOCOL_SECTIONS)


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(doc: Path) -> None:
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        # Notebooks and their executed copies are published by their own pipelines, so a link
        # may precede its file; test_every_notebook_is_listed checks the other direction.
        if path.endswith(".ipynb"):
            continue
        resolved = (doc.parent / path).resolve() if path else doc
        assert resolved.exists(), f"{doc.name}: link to missing {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{doc.name}: no heading for {target}"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_internal_history(doc: Path) -> None:
    text = doc.read_text()
    for pattern in FORBIDDEN:
        assert not pattern.search(text), f"{doc.name}: {pattern.pattern!r}"


def test_every_notebook_is_listed() -> None:
    readme = (REPO / "README.md").read_text()
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        assert f"](notebooks/{notebook.name})" in readme, f"README lacks {notebook.name}"




def _halved(node, keep: frozenset[str] = frozenset()):
    """A JSON tree with every float halved, except under the keys in `keep` (the settings that
    tokens select items by, which name a cell rather than measure it)."""
    if isinstance(node, dict):
        return {k: v if k in keep else _halved(v, keep) for k, v in node.items()}
    if isinstance(node, list):
        return [_halved(v, keep) for v in node]
    return node / 2 if isinstance(node, float) else node


# The README's numbers sit in its results table, which tests/test_results.py rebuilds from the
# same files; the documents below hold number tokens.
@pytest.mark.parametrize("name", [n for n in report.TOKENISED if n != "README.md"])
def test_a_results_file_changed_under_a_document_changes_its_numbers(name: str,
                                                                     tmp_path: Path) -> None:
    text = (REPO / name).read_text()
    for rel in report.SOURCES.values():
        if (REPO / rel).is_file():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_bytes((REPO / rel).read_bytes())
    assert report.render(text, tmp_path) == text
    used = [m.group(1) for m in report.RENDERED.finditer(text)]
    source = max(set(used), key=used.count)
    path = tmp_path / report.SOURCES[source]
    selectors = frozenset(re.findall(r"\.(\w+)=", " ".join(
        m.group(2) for m in report.RENDERED.finditer(text))))
    path.write_text(json.dumps(_halved(json.loads(path.read_text()), selectors)))
    assert report.render(text, tmp_path) != text, f"{name}: no token of {source} moved"
