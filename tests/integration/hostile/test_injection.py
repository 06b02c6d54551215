"""Markup a caller controls, shown back on every page that shows it: it stays text and never runs.

A pipeline's parameters, its notebook's result and its email all carry what
the caller typed. Each page that shows them is opened in Chromium after a
pipeline whose text is hostile markup has run: the markup must read as the
characters it is, no element it spells may exist, and no script it carries
may have run (each sets a flag on ``window`` that the test reads back).
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.support.browser import OpenPage, Screenshots, browser_test
from tests.support.gateway_page import sign_in
from tests.support.stack import Stack
from tests.support.stack_clients import Gateway, MailSink, new_id

pytestmark = browser_test

#: Markup in each context a page could put it: element, attribute, URL, template.
HOSTILE_TEXT = (
    "<script>window.__pwned = 'script'</script> "
    "<img src=x onerror=\"window.__pwned = 'img'\"> "
    '"><svg onload="window.__pwned = \'svg\'"></svg> '
    "javascript:window.__pwned='href' {{ 7 * 7 }} ${7*7}"
)
#: Selectors of the elements the markup spells; none may exist on a page.
INJECTED = "img[src='x'], svg[onload], script:not([src])"


async def assert_inert(page: Page) -> None:
    """Nothing the hostile text spells ran or was built on ``page``."""
    assert await page.evaluate("window.__pwned === undefined"), "a script from the caller's text ran"
    assert await page.locator(INJECTED).count() == 0, "an element from the caller's text was built"


@pytest.fixture(scope="module")
def hostile_pipeline(gateway: Gateway, mail: MailSink) -> str:
    """A word-frequencies pipeline whose text is hostile markup, run to its end and emailed."""
    pipeline_id = new_id("hostile-markup")
    response = gateway.start(pipeline_id, job="word-frequencies", parameters={"text": HOSTILE_TEXT, "top": "20"})
    assert response.status_code == 202, response.text
    gateway.wait_for(pipeline_id, "succeeded", timeout=90)
    mail.wait_for(pipeline_id)
    return pipeline_id


async def test_the_pipeline_page_shows_the_callers_markup_as_text(
    page: Page, stack: Stack, hostile_pipeline: str, screenshots: Screenshots
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await sign_in(page, stack)

    await page.goto(stack.api_url + f"/ui/pipelines/{hostile_pipeline}")
    await expect(page.locator("#pipeline-state")).to_have_text("succeeded")
    await expect(page.get_by_text("<script>window.__pwned", exact=False).first).to_be_visible()
    await screenshots.take(page, "pipeline")
    await assert_inert(page)

    await page.goto(stack.api_url + "/ui/?job=word-frequencies")
    await expect(page.locator(f"tr[data-pipeline='{hostile_pipeline}']")).to_be_visible()
    await assert_inert(page)
    assert dialogs == []


async def test_the_email_shows_the_callers_markup_as_text_in_the_mail_sink(
    open_page: OpenPage, stack: Stack, mail: MailSink, hostile_pipeline: str, screenshots: Screenshots
) -> None:
    page = await open_page()
    message = mail.wait_for(hostile_pipeline)
    assert "<script>" not in (message.get("html") or ""), "the email's HTML carries the caller's markup unescaped"

    await page.goto(stack.mailsink_url + f"/ui?pipeline={hostile_pipeline}")
    await page.locator("a[href*='/ui/messages/']").first.click()
    await expect(page.locator("iframe.html-part")).to_be_visible()
    frame = page.frame_locator("iframe.html-part")
    await expect(frame.get_by_text("<script>window.__pwned", exact=False).first).to_be_visible()
    await screenshots.take(page, "email")
    await assert_inert(page)
    for child in page.frames[1:]:
        assert await child.locator(INJECTED).count() == 0, "the email's HTML part built an element from the text"
