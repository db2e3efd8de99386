"""The documentation: docs/ builds with every warning an error (mkdocs --strict: a broken link or anchor, a
docstring reference to a name that moved, a page missing from the nav), every page is in the nav, and the
README's links lead to files that exist and its first screen says how to start."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_the_docs_build_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()
    html = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "fixed_points" in html and "statistics_table" in html  # the API reference was generated


def test_the_spec_lives_in_the_repository():
    spec = (ROOT / "docs" / "spec.md").read_text()
    assert "## 4. Analyses of [U]" in spec and "../shared" not in spec
    assert "../shared" not in README


def _nav_pages(node):
    if isinstance(node, str):
        return [node] if node.endswith(".md") else []
    items = node.values() if isinstance(node, dict) else node
    return [page for item in items for page in _nav_pages(item)]


def test_every_docs_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(set(nav)) == pages
    assert len(nav) == len(set(nav))  # no page twice


def _slug(heading):
    """The anchor mkdocs (toc) and GitHub both give a plain heading: lowercase words joined by '-'."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"\s+", "-", text)


def test_the_readme_links_lead_to_files_that_exist():
    targets = [t for t in LINK.findall(README) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert len(targets) >= 15  # every docs page is linked from the README
    for target in targets:
        path, _, anchor = target.partition("#")
        assert (ROOT / path).exists(), f"README links to {path}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), flags=re.M)
            assert anchor in {_slug(h) for h in headings}, f"README links to {target}: no such heading"
    linked = {t.partition("#")[0] for t in targets}
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= linked  # the table names every page


def test_the_readme_first_screen_says_how_to_start():
    first = "\n".join(README.splitlines()[:40])
    for needle in ("make demo", "make test", "popdyn.store.load("):
        assert needle in first, needle
    assert len(README.split()) <= 1500  # the reference lives in docs/
