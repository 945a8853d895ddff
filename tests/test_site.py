"""`make site`: the staging of links, the failure on a broken link, and the real site in Chromium.

The browser test opens the built pages through file:// in Debian's Chromium (`/usr/bin/chromium`,
never a downloaded browser), as tests/test_jupyterlab.py does, and is skipped without it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath

import pytest

from nbutils import site

pytest.importorskip("mkdocs_jupyter", reason="the site extra is not installed: pip install .[site]")

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Pages with figures: the README's PNG files, and an executed notebook's inline outputs.
PAGES_WITH_FIGURES = ("index.html", "docs/results.html", "figures/cpu/notebooks/04_recovery.html")
IMAGES = "els => els.map(e => ({src: e.src.slice(0, 80), width: e.naturalWidth}))"


def notebook(markdown: str) -> str:
    """A one-cell notebook (nbformat 4) whose markdown cell is `markdown`."""
    return json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": markdown}],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def small_repo(root: Path, readme: str = "", note: str = "") -> Path:
    """A repository of the site's shape: README, one doc, a figure, a notebook and its copy."""
    (root / "docs").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "figures" / "cpu" / "notebooks").mkdir(parents=True)
    (root / "README.md").write_text(f"# Home\n\nSee [the doc](docs/a.md).\n\n{readme}\n")
    (root / "docs" / "a.md").write_text(
        "# A\n\n## Part two\n\n![plot](../figures/cpu/plot.png) and [home](../README.md)\n"
        "and [all figures](../figures/cpu), <!--t cpu:x|pct-->88.5%<!--/t--> of them.\n")
    shutil.copy(REPO / "figures" / "cpu" / "training_curves.png", root / "figures/cpu/plot.png")
    (root / "figures" / "cpu" / "compact.npz").write_bytes(b"features")
    text = notebook(f"See [part two](../docs/a.md#part-two). {note}")
    (root / "notebooks" / "01_x.ipynb").write_text(text)
    (root / "figures" / "cpu" / "notebooks" / "01_x.ipynb").write_text(text)
    return root


def test_number_markers_are_stripped() -> None:
    text = "at <!--t cpu_seeds:summary.recovery.x|pm-->88.5 ± 0.4%<!--/t-->, <!-- kept -->"
    assert site.strip_tokens(text) == "at 88.5 ± 0.4%, <!-- kept -->"


def test_notebook_links_are_rebased_to_the_executed_copy() -> None:
    source = "[p](../docs/protocol.md#7-profiles), [r](../README.md), [w](https://x.org/a.md)"
    staged = PurePosixPath("figures/cpu/notebooks/01_train.ipynb")
    assert site.notebook_links(source, staged) == (
        "[p](../../../docs/protocol.html#7-profiles), [r](../../../index.html), "
        "[w](https://x.org/a.md)")


def test_a_link_to_a_folder_opens_a_listing(tmp_path: Path) -> None:
    site.stage(small_repo(tmp_path / "repo"), tmp_path / "src")
    doc = (tmp_path / "src" / "docs" / "a.md").read_text()
    assert "[all figures](../figures/cpu/index.md), 88.5% of them" in doc
    listing = (tmp_path / "src" / "figures" / "cpu" / "index.md").read_text()
    assert "- [plot.png](plot.png)" in listing
    assert "- [notebooks/01_x.ipynb](notebooks/01_x.ipynb)" in listing
    assert "compact.npz" not in listing
    assert not (tmp_path / "src" / "figures" / "cpu" / "compact.npz").exists()


def test_broken_links_finds_missing_files_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "b.html").write_text('<h2 id="there">b</h2>')
    (tmp_path / "a.html").write_text(
        '<a href="b.html#there"></a><a href="b.html#gone"></a><img src="c.png">'
        '<a href="https://example.org/c.png"></a><img src="data:image/png;base64,AA">'
        '<a href="#top"></a><p id="top"></p>')
    assert site.broken_links(tmp_path) == ["a.html: b.html#gone", "a.html: c.png"]


def test_a_small_site_builds(tmp_path: Path) -> None:
    built = site.build(small_repo(tmp_path / "repo"), tmp_path / "out")
    assert (built / "figures" / "cpu" / "notebooks" / "01_x.html").is_file()
    assert "88.5% of them" in (built / "docs" / "a.html").read_text()


@pytest.mark.parametrize(("readme", "note", "messages"), [
    # MkDocs --strict names every broken link of the Markdown pages before it gives up.
    ("[gone](docs/gone.md) ![gone](figures/cpu/gone.png) [gone](docs/a.md#no-such-part)", "",
     ("'docs/gone.md', but the target is not found",
      "'figures/cpu/gone.png', but the target is not found",
      "does not contain an anchor '#no-such-part'")),
    # MkDocs never sees a notebook's links: the check of the built HTML does.
    ("", "[gone](../docs/gone.md)", ("notebooks/01_x.html: ../../../docs/gone.html",)),
], ids=["markdown", "notebook"])
def test_a_broken_internal_link_fails_the_build(tmp_path: Path, readme: str, note: str,
                                                messages: tuple[str, ...]) -> None:
    with pytest.raises(site.SiteError) as info:
        site.build(small_repo(tmp_path / "repo", readme, note), tmp_path / "out")
    for message in messages:
        assert message in str(info.value)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's own site, built once for this module."""
    return site.build(REPO, tmp_path_factory.mktemp("site"))


@pytest.mark.slow
def test_the_site_has_every_page(built: Path) -> None:
    executed = sorted(REPO.glob("figures/*/notebooks/*.ipynb"))
    pages = [built / p.relative_to(REPO).with_suffix(".html") for p in executed]
    assert executed and all(p.is_file() for p in pages), [p for p in pages if not p.is_file()]
    for doc in REPO.glob("docs/*.md"):
        assert "<!--t " not in (built / "docs" / f"{doc.stem}.html").read_text(), doc.name


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_FIGURES)
def test_the_figures_of_a_page_load_in_chromium(built: Path, tmp_path: Path, page: str) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}; install it with `apt-get install chromium`")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page()
            # "load" waits for every image, loaded or failed.
            tab.goto((built / page).as_uri(), wait_until="load")
            images = tab.eval_on_selector_all("img", IMAGES)
        finally:
            browser.close()
    assert images, f"{page} shows no figure"
    assert all(img["width"] > 0 for img in images), [i for i in images if not i["width"]]
