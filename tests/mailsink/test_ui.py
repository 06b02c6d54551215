"""The sink's page in a real browser: what a developer sees, clicks and types.

Each test starts its own sink, sends it real mail over SMTP (a plain email
delivered twice, an HTML email with a script in it and an attachment, and a
conversation of three), and looks at ``/ui`` in headless Chromium
(tests/support/browser.py). Screenshots of every page land in
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import quote

import aiosmtplib
import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Locator, Page, expect

from mailsink import MailSink
from tests.support.browser import (
    DESKTOP,
    PHONE,
    OpenPage,
    Screenshots,
    broken_words,
    browser_test,
    line_count,
    sideways_overflow,
)
from tests.support.mail_messages import make_message, unique_address

pytestmark = browser_test

#: What the HTML email's script would write if it ran.
SCRIPT_MARK = "the script ran"
HTML_WITH_SCRIPT = f"""\
<h1 id="greeting">Hello from the HTML part</h1>
<p>The run finished. <a href="https://databricks.example/run/1">See the run</a></p>
<script>
  document.getElementById("greeting").textContent = "{SCRIPT_MARK}";
  parent.document.title = "{SCRIPT_MARK}";
</script>
<img src="x" alt="" onerror="document.body.dataset.ran = 'yes'">
"""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A running sink and the numbers of the mail sent to it, in arrival order."""

    sink: MailSink
    plain: int
    html: int
    thread: list[int]
    thread_ids: list[str]
    thread_pipeline: str
    html_subject: str

    def url(self, path: str) -> str:
        return self.sink.http_url + path


async def send(sink: MailSink, message: EmailMessage) -> None:
    await aiosmtplib.send(message, hostname=sink.smtp_host, port=sink.smtp_port)


@pytest_asyncio.fixture(loop_scope="session")
async def mailbox() -> AsyncIterator[Mailbox]:
    # On the session's loop, the browser's: see tests/support/browser.py.
    async with MailSink() as sink:
        run = uuid.uuid4().hex[:8]
        to = unique_address()
        plain = make_message(to=to, subject=f"Pipeline plain-{run} succeeded", pipeline_id=f"plain-{run}", html=None)
        await send(sink, plain)
        await send(sink, plain)  # the sender retrying: one message, two deliveries

        html_subject = f'Report <script>alert("subject {run}")</script>'
        html = make_message(to=to, subject=html_subject, pipeline_id=f"html-{run}", html=HTML_WITH_SCRIPT)
        html.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="result.csv")
        await send(sink, html)

        # A long pipeline id and long Message-IDs, as the notifier makes them,
        # so the phone layout has unbroken strings to wrap.
        pipeline = f"thread-{run}-{uuid.uuid4().hex}"
        ids = [
            f"<pipeline.{uuid.uuid4().hex}{uuid.uuid4().hex}.{step}@mail.example.test>"
            for step in ("started", "waiting", "succeeded")
        ]
        subjects = [
            f"Pipeline {pipeline} started",
            f"Re: Pipeline {pipeline} started",
            f"Re: Pipeline {pipeline} started",
        ]
        for index, (message_id, subject) in enumerate(zip(ids, subjects, strict=True)):
            # The last one also names an original the sink never received.
            ancestors = (["<gone@mail.example.test>"] if index == 2 else []) + ids[:index]
            await send(
                sink,
                make_message(
                    to=to,
                    subject=subject,
                    message_id=message_id,
                    pipeline_id=pipeline,
                    replying_to=ancestors,
                ),
            )
        yield Mailbox(
            sink,
            plain=1,
            html=2,
            thread=[3, 4, 5],
            thread_ids=ids,
            thread_pipeline=pipeline,
            html_subject=html_subject,
        )


async def row_numbers(within: Page | Locator) -> list[int]:
    """The message numbers of the list's rows, top to bottom."""
    found = await within.locator("tr.message").evaluate_all("rows => rows.map(r => r.dataset.number)")
    return [int(n) for n in found]


async def test_the_list_shows_every_email_newest_first_with_the_conversation_marked(
    mailbox: Mailbox, page: Page, screenshots: Screenshots
) -> None:
    await page.goto(mailbox.url("/ui"))
    await screenshots.take(page, "list")

    assert await row_numbers(page) == [5, 4, 3, 2, 1]
    await expect(page.locator("#count")).to_have_text("5 emails")

    html_row = page.locator(f'tr[data-number="{mailbox.html}"]')
    await expect(html_row.locator("td.subject a")).to_have_text(mailbox.html_subject)
    await expect(html_row.locator('[data-label="From"]')).to_have_text("pipelines@example.test")
    await expect(html_row.locator('[data-label="Pipeline"]')).to_contain_text("html-")
    plain_row = page.locator(f'tr[data-number="{mailbox.plain}"]')
    await expect(plain_row.locator('[data-label="Deliveries"]')).to_have_text("2")
    # The subject's script is text on the page, not code in it.
    assert await page.title() == "Emails received · mailsink"

    conversation = page.locator("tbody.conversation")
    await expect(conversation).to_have_count(1)
    await expect(conversation.locator(".conversation-head")).to_have_text("Conversation of 3 emails")
    assert await row_numbers(conversation) == [5, 4, 3]
    await expect(conversation.locator(".badge")).to_have_count(2)  # the two replies
    await expect(page.locator("tbody:not(.conversation) .badge")).to_have_count(0)


async def test_the_list_filters_by_pipeline_id(mailbox: Mailbox, page: Page, screenshots: Screenshots) -> None:
    await page.goto(mailbox.url("/ui"))
    await page.get_by_label("Pipeline id").fill(mailbox.thread_pipeline)
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(f"**/ui?pipeline={mailbox.thread_pipeline}")
    await screenshots.take(page, "filtered")

    assert await row_numbers(page) == [5, 4, 3]
    await expect(page.locator("h1")).to_contain_text(mailbox.thread_pipeline)
    await expect(page.get_by_label("Pipeline id")).to_have_value(mailbox.thread_pipeline)

    await page.get_by_role("link", name="Show every pipeline").click()
    await page.wait_for_url("**/ui")
    assert await row_numbers(page) == [5, 4, 3, 2, 1]

    # A row's pipeline is a link to the same filter.
    await page.locator('tr[data-number="1"] [data-label="Pipeline"] a').click()
    await page.wait_for_url("**/ui?pipeline=plain-*")
    assert await row_numbers(page) == [1]

    await page.goto(mailbox.url("/ui?pipeline=no-such-pipeline"))
    await screenshots.take(page, "filtered-empty")
    await expect(page.locator(".empty")).to_have_text("No email of this pipeline has arrived.")
    await expect(page.locator("tr.message")).to_have_count(0)


async def test_an_html_email_is_shown_in_a_sandbox_where_its_script_does_not_run(
    mailbox: Mailbox, page: Page, screenshots: Screenshots
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(mailbox.url(f"/ui/messages/{mailbox.html}"))
    await screenshots.take(page, "html-email")

    await expect(page.locator("h1")).to_have_text(mailbox.html_subject)
    frame_element = page.locator("iframe.html-part")
    # Present and empty: every restriction, no allow-scripts, no allow-same-origin.
    assert await frame_element.get_attribute("sandbox") == ""
    assert "<script>" in (await frame_element.get_attribute("srcdoc") or "")

    frame = page.frame_locator("iframe.html-part")
    await expect(frame.locator("#greeting")).to_have_text("Hello from the HTML part")
    (content,) = [f for f in page.frames if f.url == "about:srcdoc"]
    seen = await content.evaluate("({origin: window.origin, ran: document.body.dataset.ran})")
    assert seen == {"origin": "null", "ran": None}, "an opaque origin, and no handler ran"
    assert await page.title() == f"{mailbox.html_subject} · mailsink"
    assert errors == []

    await expect(page.locator("pre.text-part")).to_have_text("Plain body.\n")
    await expect(page.locator(".attachments li")).to_have_text("result.csv · text/csv · 8 bytes")

    raw = page.get_by_role("link", name="Raw message")
    assert await raw.get_attribute("href") == f"/messages/{mailbox.html}/raw"
    answer = await page.request.get(mailbox.url(f"/messages/{mailbox.html}/raw"))
    assert answer.headers["content-type"] == "message/rfc822"
    assert b"result.csv" in await answer.body()


async def test_thread_links_lead_through_the_conversation(
    mailbox: Mailbox, page: Page, screenshots: Screenshots
) -> None:
    first, second, third = mailbox.thread
    await page.goto(mailbox.url(f"/ui/messages/{third}"))
    await screenshots.take(page, "third")

    headers = page.locator("dl.headers").first
    references = headers.locator("dt:text-is('References') + dd li")
    await expect(references).to_have_count(3)
    await expect(references.nth(0)).to_have_text("<gone@mail.example.test> (not stored)")
    await expect(references.nth(1).locator("a")).to_have_attribute("href", f"/ui/messages/{first}")
    await expect(references.nth(2).locator("a")).to_have_attribute("href", f"/ui/messages/{second}")
    thread = page.locator("section.thread li")
    await expect(thread).to_have_count(3)
    await expect(thread.nth(2).locator('[aria-current="page"]')).to_contain_text("this email")

    await headers.locator("dt:text-is('In-Reply-To') + dd a").click()
    await page.wait_for_url(f"**/ui/messages/{second}")
    await screenshots.take(page, "second")
    await expect(page.locator("dl.headers").first.locator("dt:text-is('Message-ID') + dd")).to_have_text(
        mailbox.thread_ids[1]
    )

    await page.locator("section.thread").get_by_role("link").first.click()
    await page.wait_for_url(f"**/ui/messages/{first}")
    await screenshots.take(page, "first")
    await expect(page.locator("dt:text-is('In-Reply-To')")).to_have_count(0)
    await expect(page.locator("section.thread li")).to_have_count(3)


async def test_a_message_id_alone_leads_to_the_email(mailbox: Mailbox, page: Page, screenshots: Screenshots) -> None:
    message_id = mailbox.thread_ids[2]
    await page.goto(mailbox.url(f"/ui/by-message-id/{quote(message_id, safe='')}"))
    await page.wait_for_url(f"**/ui/messages/{mailbox.thread[2]}")
    await screenshots.take(page, "by-message-id")
    await expect(page.locator("dt:text-is('Message-ID') + dd").first).to_have_text(message_id)


async def test_the_keyboard_alone_opens_an_email(mailbox: Mailbox, page: Page, screenshots: Screenshots) -> None:
    await page.goto(mailbox.url("/ui"))

    await page.keyboard.press("Tab")
    focused = page.locator(":focus")
    await expect(focused).to_have_text("Skip to content")
    await expect(focused).to_be_in_viewport()
    assert await focused.evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
    await screenshots.take(page, "skip-link")
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()

    # From the top of the content, Tab through the form to the newest email.
    newest = page.locator(f'tr[data-number="{mailbox.thread[2]}"] td.subject a')
    for _ in range(10):
        await page.keyboard.press("Tab")
        if await newest.evaluate("e => e === document.activeElement"):
            break
    await expect(newest).to_be_focused()
    assert await newest.evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
    await screenshots.take(page, "focused-link")

    await page.keyboard.press("Enter")
    await page.wait_for_url(f"**/ui/messages/{mailbox.thread[2]}")
    await screenshots.take(page, "opened")
    await expect(page.locator("h1")).to_have_text(f"Re: Pipeline {mailbox.thread_pipeline} started")


async def test_the_pages_fit_a_phone_without_sideways_scrolling(
    mailbox: Mailbox, open_page: OpenPage, screenshots: Screenshots
) -> None:
    phone = await open_page(**PHONE)
    for step, path in (
        ("list", "/ui"),
        ("thread-email", f"/ui/messages/{mailbox.thread[2]}"),
        ("html-email", f"/ui/messages/{mailbox.html}"),
        ("not-found", "/ui/messages/999"),
    ):
        await phone.goto(mailbox.url(path))
        await screenshots.take(phone, step)
        widths = await phone.evaluate("({page: document.documentElement.scrollWidth, window: window.innerWidth})")
        assert widths["page"] <= widths["window"] == PHONE["viewport"]["width"], (step, widths)

    # The list's rows are cards there: each cell stacked, labelled by its column.
    await phone.goto(mailbox.url("/ui"))
    label = await phone.locator('tr[data-number="1"] [data-label="From"]').evaluate(
        "e => getComputedStyle(e, '::before').content"
    )
    assert label == '"From: "'


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_the_lists_numbers_and_dates_stay_whole_and_subjects_wrap_between_words(
    open_page: OpenPage, screenshots: Screenshots, viewport: dict[str, object]
) -> None:
    async with MailSink() as sink:
        to = unique_address("a-rather-long-recipient-name")
        for number in range(1, 13):
            message = make_message(
                to=to,
                subject=f"Pipeline nightly-customer-statistics-{number} succeeded after a repair "
                "of its csv-statistics task, with every column summarised",
                pipeline_id=f"nightly-customer-statistics-{number}",
            )
            message["Date"] = format_datetime(datetime(2026, 12, 5, 6, number, 7, tzinfo=UTC))
            await send(sink, message)
        page = await open_page(**viewport)
        await page.goto(sink.http_url + "/ui")
        await screenshots.take(page, "list")

        assert await line_count(page, "tr.message td[data-label='#']") == [1] * 12
        assert await line_count(page, "tr.message td[data-label='Deliveries']") == [1] * 12
        assert await line_count(page, "tr.message time") == [1] * 12
        assert await broken_words(page, "tr.message td[data-label='#'], tr.message .subject, tr.message time") == []
        assert await sideways_overflow(page) == 0, "the list scrolls sideways"


async def test_every_page_has_an_icon_and_favicon_ico_answers(mailbox: Mailbox) -> None:
    async with httpx.AsyncClient(base_url=mailbox.sink.http_url) as client:
        icon = await client.get("/favicon.ico")
        page = await client.get("/ui")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg")
    assert '<link rel="icon" href="data:image/svg+xml;base64,' in page.text
