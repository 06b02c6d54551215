"""Browser fixtures for tests of the project's web pages, on Debian's chromium.

Why Debian's chromium: ``playwright install`` downloads browsers from a CDN
this project's machines cannot reach, while Debian's package comes from the
mirror they do reach (``.ci/run`` installs it when it is missing). Playwright
drives it as it drives its own build. A machine without it fails these tests
with the command that installs it; they never skip, so a green run always
means the pages were looked at.

Why async, on the session's event loop: the browser starts once per session
(a second or so), and Playwright's objects belong to the loop they were made
on, while pytest-asyncio gives each test a loop of its own unless told
otherwise. So a module of browser tests sets ``pytestmark = browser_test``,
and any async fixture those tests use that serves something (a mail sink, an
app) is declared with ``loop_scope="session"`` too; otherwise it would serve
on a loop that does not run while the test does. Playwright's sync API is no
way out: while it lives it marks its own loop as running on the main thread,
which breaks every async test that comes after it.

Every page a test looks at can be kept as a full-page screenshot,
``test-artifacts/screenshots/<test name>-<step>.png`` (git ignores the
folder), for a person to look at what the assertions saw.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

#: Where Debian's ``chromium`` package puts the browser; ``CHROMIUM_PATH``
#: names another.
DEFAULT_CHROMIUM_PATH = "/usr/bin/chromium"
#: Headless, and nothing that reaches out on its own: the machines have no
#: internet, and a browser retrying its update and sync servers would only
#: slow the tests. ``--no-sandbox``: tests run as root in CI, where Chromium
#: refuses its own sandbox.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: A laptop's window: how pages are looked at unless a test says otherwise.
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
#: A small phone (an iPhone SE's 375x667 CSS pixels). A mobile viewport obeys
#: the page's ``<meta name="viewport">``, as a phone does; without that meta
#: tag it lays the page out 980 pixels wide and shrinks it.
PHONE: dict[str, Any] = {
    "viewport": {"width": 375, "height": 667},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
#: The folder screenshots go to, below the repository root.
SCREENSHOT_DIR = Path("test-artifacts") / "screenshots"

#: Mark a module of browser tests with it: they run on the session's loop,
#: the browser's.
browser_test = pytest.mark.asyncio(loop_scope="session")


def chromium_path() -> str:
    """The chromium to drive, or a test failure saying how to install one."""
    chosen = os.environ.get("CHROMIUM_PATH")
    path = chosen or DEFAULT_CHROMIUM_PATH
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        where = "named by CHROMIUM_PATH" if chosen else "the default; CHROMIUM_PATH names another"
        pytest.fail(
            f"no Chromium at {path} ({where}). The browser tests drive "
            "Debian's chromium package; install it as root with\n"
            "    apt-get install -y --no-install-recommends chromium\n"
            "(.ci/run does this). Playwright's own browser download is not used.",
            pytrace=False,
        )
    return path


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the whole session."""
    path = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


OpenPage = Callable[..., Awaitable[Page]]


@pytest_asyncio.fixture(loop_scope="session")
async def open_page(browser: Browser) -> AsyncIterator[OpenPage]:
    """``await open_page(**PHONE)``: a page in a fresh context (no cookies, no cache).

    Takes ``Browser.new_context``'s options (DESKTOP when none are given).
    Every context a test opened is closed after it.
    """
    contexts: list[BrowserContext] = []

    async def open_one(**options: Any) -> Page:
        context = await browser.new_context(**(options or DESKTOP))
        contexts.append(context)
        return await context.new_page()

    try:
        yield open_one
    finally:
        for context in contexts:
            await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(open_page: OpenPage) -> Page:
    """A page at the desktop size."""
    return await open_page()


@dataclass(frozen=True, slots=True)
class Screenshots:
    """Saves what a page shows as ``<directory>/<test name>-<step>.png``."""

    directory: Path
    test_name: str

    async def take(self, page: Page, step: str) -> Path:
        """A full-page screenshot of what ``page`` shows now, frames included.

        Chromium paints a frame of another origin (a sandboxed one has none)
        only while it is in the viewport, and a full-page screenshot does not
        change that: a frame below the fold would come out blank. So the
        viewport is made as tall as the page for the picture, then put back.
        """
        path = self.directory / f"{self.test_name}-{_file_name(step)}.png"
        viewport = page.viewport_size
        height = await page.evaluate("document.documentElement.scrollHeight")
        if viewport is None or height <= viewport["height"]:
            await page.screenshot(path=path, full_page=True)
            return path
        await page.set_viewport_size({"width": viewport["width"], "height": height})
        try:
            await page.screenshot(path=path, full_page=True)
        finally:
            await page.set_viewport_size(viewport)
        return path


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "page"


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Screenshots:
    directory = request.config.rootpath / SCREENSHOT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    return Screenshots(directory, _file_name(request.node.name))


#: Letters or digits on both sides of a line break inside an element's text:
#: a word (or a number) the layout broke in two. A break after a space, a
#: hyphen or a slash is where text may wrap and is not counted.
_BROKEN_WORDS_JS = r"""
(elements) => {
  const broken = [];
  const range = document.createRange();
  const wordChar = /[\p{L}\p{N}]/u;
  for (const element of elements) {
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const text = node.textContent;
      let previous = null;
      for (let i = 0; i < text.length; i++) {
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const rect = range.getBoundingClientRect();
        if (rect.width === 0 && rect.height === 0) { previous = null; continue; }
        if (previous && wordChar.test(text[i]) && wordChar.test(text[i - 1])
            && rect.top > previous.top + previous.height / 2) {
          const start = text.lastIndexOf(" ", i) + 1;
          const end = text.indexOf(" ", i);
          broken.push(text.slice(start, end === -1 ? undefined : end));
        }
        previous = rect;
      }
    }
  }
  return broken;
}
"""


async def broken_words(page: Page, selector: str) -> list[str]:
    """The words (and numbers) that the elements matching ``selector`` show broken across two lines."""
    return await page.locator(selector).evaluate_all(_BROKEN_WORDS_JS)


async def line_count(page: Page, selector: str) -> list[int]:
    """How many lines the content of each element matching ``selector`` takes."""
    return await page.locator(selector).evaluate_all(
        """elements => elements.map(element => {
             const range = document.createRange();
             range.selectNodeContents(element);
             return new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top))).size;
           })"""
    )


async def sideways_overflow(page: Page) -> int:
    """How many CSS pixels the document is wider than the viewport the page was opened with (0: none).

    Compared with the viewport asked for, not ``innerWidth``: on a mobile
    viewport Chromium widens the layout viewport to fit a page that overflows
    (as a phone zooms out), and ``innerWidth`` grows with it.
    """
    assert page.viewport_size is not None
    document = await page.evaluate("Math.max(document.documentElement.scrollWidth, window.innerWidth)")
    return max(document - page.viewport_size["width"], 0)
