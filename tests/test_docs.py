"""The documentation site includes source files by snippet lines: a mangled line shows as text."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

SNIPPET = re.compile(r'^--8<-- "(?P<path>[^"]+)"$')
PAGES = sorted((REPO / "docs").glob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_snippet_line_includes_a_file_that_exists(page):
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("--8"):
            found = SNIPPET.match(line)
            assert found, f"{page.name}:{number}: not a snippet line the site understands: {line!r}"
            assert (REPO / found["path"]).is_file(), f"{page.name}:{number}: no file {found['path']}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_picture_a_page_shows_exists(page):
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
        assert (page.parent / picture).is_file(), f"{page.name} shows {picture}, which is not in docs/"
