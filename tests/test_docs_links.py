"""The README stays a newcomer's page and every page it leads to is reachable.

Every relative link in README.md, docs/*.md and benchmarks/README.md names a file that exists
and, for a ``#anchor``, a heading of that file (GitHub's slug of it). The README is under
8,000 characters and links every docs/*.md page. Links inside code (fenced blocks, inline
code spans) are not links and are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, ROOT / "benchmarks" / "README.md"]
README_MAX_CHARS = 8000

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
LINK_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def outside_fences(text: str) -> list[str]:
    """The lines of a Markdown text outside its fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans removed."""
    return [INLINE_CODE.sub("", line) for line in outside_fences(text)]


def link_targets(text: str) -> list[str]:
    """Every link and image target of a Markdown text, in order."""
    targets = []
    for line in prose_lines(text):
        targets += INLINE_LINK.findall(line)
        definition = LINK_DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
    return targets


def github_slug(heading: str) -> str:
    """GitHub's anchor of a heading: the text as rendered (code spans and links reduced to
    their text), lower case, without punctuation other than ``-`` and ``_``, spaces as ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings; a repeated slug gets ``-1``, ``-2``, ..."""
    seen: dict[str, int] = {}
    found = set()
    for line in outside_fences(path.read_text()):
        heading = HEADING.match(line)
        if heading:
            slug = github_slug(heading.group(2))
            found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` that name no file, or no heading of that file."""
    broken = []
    for target in link_targets(page.read_text()):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            broken.append(f"{target}: no heading with anchor #{anchor} in {linked.name}")
    return broken


def test_github_slugs_of_the_headings_we_write():
    assert github_slug("Deployment CI: `verify`, `diff`, `inspect`") == (
        "deployment-ci-verify-diff-inspect"
    )
    assert github_slug("Results at `42253ba`") == "results-at-42253ba"
    assert github_slug("What is refused, with a reason") == "what-is-refused-with-a-reason"
    assert github_slug("Exit codes (every command)") == "exit-codes-every-command"


def test_links_in_code_are_not_links():
    text = "[a](a.md) `[b](b.md)`\n```\n[c](c.md)\n```\n![d](d.png) [e](http://x/e.md)\n[f]: f.md\n"
    assert link_targets(text) == ["a.md", "d.png", "http://x/e.md", "f.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_readme_is_a_short_page():
    length = len(README.read_text())
    assert length < README_MAX_CHARS, f"README.md has {length} characters"


def test_readme_links_every_docs_page():
    linked = {
        (README.parent / unquote(target.partition("#")[0])).resolve()
        for target in link_targets(README.read_text())
        if not EXTERNAL.match(target)
    }
    assert DOCS
    assert [page.name for page in DOCS if page.resolve() not in linked] == []
