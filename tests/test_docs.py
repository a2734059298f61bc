"""The documentation site includes source files by snippet lines (a mangled line shows as text) and
shows pictures from docs/img (a missing one shows as a broken image): each page that has any is checked."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO

if TYPE_CHECKING:
    from pathlib import Path

SNIPPET = re.compile(r'^--8<-- "(?P<path>[^"]+)"$')
PICTURE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
PAGES = sorted((REPO / "docs").glob("*.md"))
SNIPPET_PAGES = [page for page in PAGES if any(line.startswith("--8") for line in page.read_text().splitlines())]
PICTURE_PAGES = [page for page in PAGES if PICTURE.search(page.read_text())]


def snippet_problems(page: Path) -> list[str]:
    """Each snippet line of ``page`` the site would not include, in words."""
    problems = []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("--8"):
            found = SNIPPET.match(line)
            if not found:
                problems.append(f"{page.name}:{number}: not a snippet line the site understands: {line!r}")
            elif not (REPO / found["path"]).is_file():
                problems.append(f"{page.name}:{number}: no file {found['path']}")
    return problems


def picture_problems(page: Path) -> list[str]:
    return [
        f"{page.name} shows {picture}, which is not in docs/"
        for picture in PICTURE.findall(page.read_text())
        if not (page.parent / picture).is_file()
    ]


def test_the_pages_that_include_snippets_and_show_pictures_are_found():
    assert {"examples.md", "testing.md", "review.md"} <= {page.name for page in SNIPPET_PAGES}
    assert {"ui.md", "review.md", "connection.md"} <= {page.name for page in PICTURE_PAGES}


@pytest.mark.parametrize("page", SNIPPET_PAGES, ids=lambda p: p.name)
def test_every_snippet_line_includes_a_file_that_exists(page):
    assert snippet_problems(page) == []


@pytest.mark.parametrize("page", PICTURE_PAGES, ids=lambda p: p.name)
def test_every_picture_a_page_shows_exists(page):
    assert picture_problems(page) == []


def test_a_mangled_snippet_line_and_a_missing_picture_are_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        '--8<-- "dags/kling_text_to_video.py"\n--8<- "dags/x.py"\n--8<-- "dags/nope.py"\n![a](img/nope.png)\n'
    )
    assert [problem.split(": ", 1)[1] for problem in snippet_problems(page)] == [
        "not a snippet line the site understands: '--8<- \"dags/x.py\"'",
        "no file dags/nope.py",
    ]
    assert picture_problems(page) == ["page.md shows img/nope.png, which is not in docs/"]
