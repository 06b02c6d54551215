"""Every link between the repository's Markdown files leads somewhere.

README.md is a short guide whose detail lives in docs/ and in each folder's
README, so a reader gets about by following links; a section renamed or a
file moved would leave them at a dead end without anyone noticing. This
checks each relative link of each ``*.md`` (outside virtual environments,
node_modules and generated output) against the files on disk, and each
``#anchor`` against the headings of the file it names, slugged as GitHub
slugs them. Links to the web are not followed: no test here needs the
internet.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Folders whose Markdown is not ours to keep (installed packages, tool
#: caches) or is written by a run (screenshots, benchmark output).
SKIPPED_FOLDERS = {"node_modules", "test-artifacts", "bench-results"}

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", flags=re.DOTALL)
#: An inline link or image, ``[text](target)`` or ``[text](target "title")``.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", flags=re.MULTILINE)


def markdown_files() -> list[Path]:
    return sorted(
        path
        for path in ROOT.rglob("*.md")
        if not any(part.startswith(".") or part in SKIPPED_FOLDERS for part in path.relative_to(ROOT).parts[:-1])
    )


def without_code(text: str) -> str:
    """The text with its fenced blocks blanked: a ``# comment`` in a shell block is no heading."""
    return FENCE.sub(lambda block: "\n" * block.group(0).count("\n"), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text, flags=re.UNICODE)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a file's headings make, with GitHub's ``-1``, ``-2`` for repeats."""
    seen: dict[str, int] = {}
    found = set()
    for _, heading in HEADING.findall(without_code(path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    text = without_code(path.read_text(encoding="utf-8"))
    return [target for target in LINK.findall(CODE_SPAN.sub("", text)) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def shown(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        location, _, anchor = target.partition("#")
        linked = (path.parent / unquote(location)).resolve() if location else path
        if not linked.exists():
            problems.append(f"{target}: no file {shown(linked)}")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            problems.append(f"{target}: no heading with the anchor #{anchor} in {shown(linked)}")
    return problems


def test_the_markdown_files_are_found() -> None:
    found = {path.relative_to(ROOT).as_posix() for path in markdown_files()}
    assert {"README.md", "docs/README.md", "infra/databricks-emulator/README.md"} <= found


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_and_a_heading(path: Path) -> None:
    assert broken_links(path) == []


def test_a_heading_is_slugged_as_github_slugs_it() -> None:
    assert slug("The mail sink's page") == "the-mail-sinks-page"
    assert slug("Any job: the catalogue") == "any-job-the-catalogue"
    assert slug("Control API (emulator only, no auth)") == "control-api-emulator-only-no-auth"
    assert slug("`pipelines` and `client_id`") == "pipelines-and-client_id"
    assert slug("What it took -- and why") == "what-it-took----and-why"


def test_a_broken_link_and_a_broken_anchor_are_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n```sh\n# not a heading\n```\n\n"
        "[fine](other.md#a-section) [gone](missing.md) [wrong](other.md#no-such) [here](#page) "
        "[not here](#not-a-heading) [web](https://example.org/x.md) `[code](nowhere.md)`\n"
    )
    problems = [problem.split(":", 1)[0] for problem in broken_links(page)]
    assert problems == ["missing.md", "other.md#no-such", "#not-a-heading"]
