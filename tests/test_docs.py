"""The documentation in docs/ builds, with every warning an error (mkdocs --strict: a broken link, a
docstring reference to a name that moved, a page missing from the nav)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    assert "../shared" not in (ROOT / "README.md").read_text()
