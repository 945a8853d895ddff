"""`make site`: the README, docs/ and the executed notebooks as one static HTML site.

MkDocs with mkdocs-jupyter, not Jupyter Book: Jupyter Book 2 builds through mystmd, a Node.js
tool, while MkDocs and mkdocs-jupyter are pip packages that live in the project's one venv. The
notebooks are rendered with their committed outputs, never re-executed.

MkDocs reads pages from one folder only, so the sources are first staged, at the same relative
paths as in the repository (the links between them stay valid), into `<out>/src`; the site is
written to `<out>/site` and every relative link in its HTML is then checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from nbutils.paths import REPO
from nbutils.runs import atomic_write

BUILD_DIR = REPO / "build"
# What the site is made of, relative to the repository root.
SOURCES = ("README.md", "docs", "benchmarks/README.md", "notebooks", "figures")
# Left out of the site: NumPy feature archives (compact.npz, phase_features.npz) are half of
# figures/ by size and a browser cannot show them; they stay in the repository.
LEFT_OUT = ("*.npz",)
# The executed notebooks are copies of notebooks/*.ipynb: their links are relative to notebooks/.
NOTEBOOK_HOME = PurePosixPath("notebooks")
# The docs' rendered numbers, `<!--t key|fmt-->88.5%<!--/t-->`: only the number is shown.
TOKEN = re.compile(r"<!--/?t\b.*?-->")
# Inline Markdown links and images: `[text](target)`, `![alt](target "title")`.
LINK = re.compile(r"(\]\()([^)\s]+)")
# Every link MkDocs cannot resolve is a warning, and --strict makes a warning fail the build.
LINK_VALIDATION = {"not_found": "warn", "absolute_links": "warn", "unrecognized_links": "warn",
                   "anchors": "warn"}


class SiteError(RuntimeError):
    """The site could not be built, or it has broken links."""


def strip_tokens(text: str) -> str:
    """Markdown without the rendered-number markers around its numbers."""
    return TOKEN.sub("", text)


def is_relative(url: str) -> bool:
    """Whether a link points into the site by a relative path (not a scheme, `/` or `#`)."""
    parts = urlsplit(url)
    return not (parts.scheme or parts.netloc or url.startswith(("/", "#")))


def map_links(text: str, change: Callable[[str], str]) -> str:
    """Markdown with `change` applied to the path of each relative link (fragment kept)."""

    def one(match: re.Match[str]) -> str:
        url = match[2]
        if not is_relative(url):
            return match[0]
        path, sep, fragment = url.partition("#")
        return match[1] + change(path) + sep + fragment

    return LINK.sub(one, text)


def normalise(path: PurePosixPath) -> PurePosixPath:
    """`path` with its `..` segments resolved, without touching the filesystem."""
    return PurePosixPath(os.path.normpath(path))


def relative(target: PurePosixPath, start: PurePosixPath) -> str:
    """`target` as a POSIX path relative to the folder `start`."""
    return os.path.relpath(target, start).replace(os.sep, "/")


def page_url(path: str) -> str:
    """The URL of the page MkDocs builds from a `.md` or `.ipynb` path (others unchanged)."""
    pure = PurePosixPath(path)
    if pure.name in ("README.md", "index.md"):
        return str(pure.with_name("index.html"))
    return str(pure.with_suffix(".html")) if pure.suffix in (".md", ".ipynb") else path


def listing(folder: Path) -> str:
    """A Markdown page linking to every file under a folder, the page links to the folder use."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p != folder / "index.md")
    return f"# {folder.name}/\n\n" + "\n".join(f"- [{f}]({f})" for f in files) + "\n"


def folder_page(folder: Path) -> str:
    """The page a link to a folder opens: its index.md or README.md, else a generated listing."""
    for name in ("index.md", "README.md"):
        if (folder / name).is_file():
            return name
    # Listed before the write: the temporary beside index.md is not one of the folder's files.
    text = listing(folder)
    atomic_write(folder / "index.md", lambda tmp: tmp.write_text(text))
    return "index.md"


def stage_markdown(path: Path, root: Path) -> None:
    """Strip the number markers; links to a folder (a dead end in a static site) open a page."""
    here = PurePosixPath(path.parent.relative_to(root).as_posix())

    def change(link: str) -> str:
        target = root / normalise(here / link)
        return f"{link.rstrip('/')}/{folder_page(target)}" if link and target.is_dir() else link

    text = map_links(strip_tokens(path.read_text()), change)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def notebook_links(source: str, staged: PurePosixPath) -> str:
    """A markdown cell's links, written for notebooks/, rebased to `staged` and its page URLs."""

    def change(link: str) -> str:
        return page_url(relative(normalise(NOTEBOOK_HOME / link), staged.parent)) if link else link

    # mkdocs-jupyter renders cells to HTML itself: MkDocs never rewrites their `.md` links.
    return map_links(source, change)


def stage_notebook(path: Path, root: Path) -> None:
    """Rewrite the links of a notebook's markdown cells for where the site puts it."""
    staged = PurePosixPath(path.relative_to(root).as_posix())
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = notebook_links(text, staged)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(nb)))


def stage(repo: Path, dest: Path) -> None:
    """Copy the site's sources from `repo` into `dest` and prepare their links for MkDocs."""
    if dest.exists():
        shutil.rmtree(dest)
    for name in SOURCES:
        src = repo / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns(*LEFT_OUT))
        elif src.is_file():
            atomic_write(dest / name, lambda tmp, src=src: shutil.copy2(src, tmp))
    for path in sorted(dest.rglob("*.md")):
        stage_markdown(path, dest)
    for path in sorted(dest.rglob("*.ipynb")):
        stage_notebook(path, dest)


def rel_files(root: Path, pattern: str) -> list[str]:
    """POSIX paths relative to `root` of the files matching a glob, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.glob(pattern))


def nav(root: Path) -> list[dict[str, object]]:
    """The site's navigation: README, docs, executed notebooks by profile, the sources."""
    executed = [{folder.parent.name: rel_files(root, f"{folder.relative_to(root)}/*.ipynb")}
                for folder in sorted(root.glob("figures/*/notebooks"))]
    sections: list[tuple[str, object]] = [
        ("Home", "README.md"), ("Docs", rel_files(root, "docs/*.md")),
        ("Executed notebooks", executed),
        ("Notebooks (source)", rel_files(root, "notebooks/*.ipynb")),
        ("Benchmarks", rel_files(root, "benchmarks/README.md")),
    ]
    return [{title: item} for title, item in sections if item]


def config(out: Path) -> dict[str, object]:
    """The MkDocs configuration of the sources staged in `out/src`, built into `out/site`."""
    src = out / "src"
    return {
        "site_name": "Fine-grained structure survives Neural Collapse",
        "docs_dir": str(src), "site_dir": str(out / "site"), "nav": nav(src),
        # Page URLs end in .html so that the site also reads from file:// without a server.
        "use_directory_urls": False,
        # No Google Fonts: the site must read offline.
        "theme": {"name": "material", "font": False},
        # mkdocs-jupyter caches its conversions in the working directory unless told where.
        "plugins": ["search", {"mkdocs-jupyter": {"include": ["*.ipynb"],
                                                  "cache_dir": str(out / "cache")}}],
        "markdown_extensions": ["tables", "fenced_code", {"toc": {"permalink": True}}],
        "validation": {"nav": {"omitted_files": "info", "not_found": "warn",
                               "absolute_links": "warn"},
                       "links": LINK_VALIDATION},
    }


class Links(HTMLParser):
    """The `href`/`src` targets and the element ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Collect one element's link target and id."""
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.targets.append(value)
            elif name in ("id", "name") and value:
                self.ids.add(value)


def parse(page: Path) -> Links:
    """The links and ids of an HTML file."""
    links = Links()
    links.feed(page.read_text(errors="replace"))
    return links


def broken_links(site: Path) -> list[str]:
    """`page: target` for each relative link of a built site whose file or anchor is missing."""
    site = site.resolve()
    parsed = {page: parse(page) for page in sorted(site.rglob("*.html"))}
    broken = []
    for page, links in parsed.items():
        for url in links.targets:
            if not (is_relative(url) or url.startswith("#")):
                continue
            parts = urlsplit(url)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            missing_id = target in parsed and parts.fragment and (
                unquote(parts.fragment) not in parsed[target].ids)
            if not target.is_file() or missing_id:
                broken.append(f"{page.relative_to(site)}: {url}")
    return broken


def run_mkdocs(config_file: Path) -> None:
    """`mkdocs build --strict` on a configuration; its log is the error when it fails."""
    # NO_MKDOCS_2_WARNING: Material's end-of-life banner, printed on every build, is not ours.
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean",
                           "--config-file", str(config_file)], capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    if done.returncode:
        log = (done.stdout + done.stderr).splitlines()
        # The warnings name the broken links; the rest is progress (the whole log if none).
        warnings = [line for line in log if line.startswith(("WARNING", "ERROR", "Aborted"))]
        raise SiteError("mkdocs build failed:\n" + "\n".join(warnings or log))


def build(repo: Path = REPO, out: Path = BUILD_DIR) -> Path:
    """Stage `repo`'s sources under `out`, build the site into `out/site` and check its links."""
    stage(repo, out / "src")
    config_file = out / "mkdocs.yml"
    # JSON is YAML: the configuration is written without a YAML library.
    text = json.dumps(config(out), indent=1)
    atomic_write(config_file, lambda tmp: tmp.write_text(text))
    run_mkdocs(config_file)
    broken = broken_links(out / "site")
    if broken:
        raise SiteError(f"{len(broken)} broken link(s) in the site:\n" + "\n".join(broken))
    return out / "site"
