"""The gateway's web page in a real browser on the compose stack: sign in, start, watch, cancel, be refused.

Headless Chromium (tests/support/browser.py) against the stack's gateway; pipelines
run on the Databricks emulator and their emails reach the mail sink.
Screenshots of every page land in ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from tests.support.browser import PHONE, OpenPage, Screenshots, broken_words, browser_test, sideways_overflow
from tests.support.gateway_page import sign_in, start_from_form
from tests.support.stack import Stack
from tests.support.stack_clients import Emulator, Gateway, new_id

pytestmark = browser_test

#: A pipeline runs for a few seconds on the emulator; the page polls every 2.
RUN_TIMEOUT_MS = 90_000


async def test_start_a_pipeline_and_watch_it_succeed_without_reloading(
    page: Page, stack: Stack, screenshots: Screenshots
) -> None:
    await sign_in(page, stack)
    await page.goto(stack.api_url + "/ui/start")
    await screenshots.take(page, "start-form")
    pipeline_id = new_id("ui")
    await start_from_form(page, stack, pipeline_id)
    await screenshots.take(page, "just-started")
    loads: list[str] = []
    page.on("load", lambda: loads.append(page.url))

    await expect(page.locator("#pipeline-state")).to_have_text("succeeded", timeout=RUN_TIMEOUT_MS)

    assert loads == [], "the state changed without a reload"
    columns = page.locator("#result-columns")
    await expect(columns).to_be_visible()
    await expect(columns.locator("thead th").first).to_have_text("name")
    assert await columns.locator("tbody tr").count() >= 1
    await expect(page.locator("#timeline li").first).to_be_visible()
    await expect(page.locator("#timeline li[data-kind='finished']")).to_have_count(1)
    await expect(page.locator("figure.chart svg")).to_be_visible()
    await expect(page.locator(".chart .phase-running")).to_have_count(1)
    await expect(page.locator("#run-link")).to_have_attribute("href", re.compile(r"/run/|#job/"))
    await expect(page.locator("#email-receipt")).to_contain_text("Delivered")
    await screenshots.take(page, "succeeded")

    await page.goto(stack.api_url + "/ui/?state=succeeded")
    await expect(page.locator(f"tr[data-pipeline='{pipeline_id}'] .state")).to_have_text("succeeded")
    await screenshots.take(page, "list")


async def test_cancel_a_hanging_pipeline_after_confirming(
    page: Page, stack: Stack, emulator: Emulator, screenshots: Screenshots
) -> None:
    await sign_in(page, stack)
    pipeline_id = new_id("ui-hang")
    emulator.plan(pipeline_id, notebook="hang")
    await start_from_form(page, stack, pipeline_id)
    await expect(page.locator("#pipeline-state")).to_have_text("waiting", timeout=RUN_TIMEOUT_MS)

    await page.get_by_role("link", name="Cancel it…").click()
    await expect(page.get_by_role("heading", name=re.compile("Cancel pipeline"))).to_be_visible()
    await screenshots.take(page, "confirm-cancel")
    await page.get_by_role("button", name="Yes, cancel it").click()

    await expect(page.locator("#pipeline-state")).to_have_text("cancelled", timeout=RUN_TIMEOUT_MS)
    await screenshots.take(page, "cancelled")


async def test_another_principals_pipeline_is_refused_as_missing(
    page: Page, stack: Stack, gateway: Gateway, screenshots: Screenshots
) -> None:
    pipeline_id = new_id("ui-devs")
    assert gateway.start(pipeline_id).status_code == 202
    await sign_in(page, stack, "other")

    for path in (f"/ui/pipelines/{pipeline_id}", f"/ui/pipelines/{pipeline_id}/cancel"):
        response = await page.goto(stack.api_url + path)
        assert response is not None and response.status == 404
        await expect(page.get_by_role("heading", name="No such pipeline")).to_be_visible()
    await screenshots.take(page, "refused")
    gateway.wait_for(pipeline_id, "succeeded")


async def test_a_refused_action_names_what_was_wrong(page: Page, stack: Stack, gateway: Gateway) -> None:
    pipeline_id = new_id("ui-done")
    gateway.start(pipeline_id)
    gateway.wait_for(pipeline_id, "succeeded")
    await sign_in(page, stack)
    # A finished pipeline offers no action; its confirmation page, opened by address, is refused on submit.
    await page.goto(stack.api_url + f"/ui/pipelines/{pipeline_id}/abandon")
    await page.get_by_role("button", name="Yes, abandon it").click()
    await expect(page.locator("#action-problem")).to_contain_text("already finished")


#: The smallest size a chart's text may be drawn at, in CSS pixels.
MIN_CHART_TEXT_PX = 11


async def test_the_pages_read_on_a_phone(
    open_page: OpenPage, stack: Stack, gateway: Gateway, screenshots: Screenshots
) -> None:
    pipeline_id = new_id("ui-phone")
    assert gateway.start(pipeline_id).status_code == 202
    gateway.wait_for_timeline(pipeline_id, "succeeded", timeout=RUN_TIMEOUT_MS / 1000)
    page = await open_page(**PHONE)
    refused: list[str] = []
    page.on("response", lambda response: refused.append(response.url) if response.status >= 400 else None)
    await sign_in(page, stack)

    for step, path in (("list", "/ui/"), ("start", "/ui/start"), ("pipeline", f"/ui/pipelines/{pipeline_id}")):
        await page.goto(stack.api_url + path)
        await screenshots.take(page, f"phone-{step}")
        assert await sideways_overflow(page) == 0, f"the {step} page scrolls sideways on a 375 px phone"

    await expect(page.locator("#result-columns")).to_be_visible()
    assert await broken_words(page, ".result-table, #result-fields, .phases") == []
    sizes = await page.locator("figure.chart svg text").evaluate_all(
        "texts => texts.map(t => parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a)"
    )
    assert sizes and min(sizes) >= MIN_CHART_TEXT_PX, sizes
    assert refused == [], "every request answered, the icon too"


async def test_the_run_link_opens_that_run_in_the_emulator(
    page: Page, stack: Stack, gateway: Gateway, screenshots: Screenshots
) -> None:
    pipeline_id = new_id("ui-run-link")
    assert gateway.start(pipeline_id).status_code == 202
    run_id = gateway.wait_for(pipeline_id, "succeeded")["databricks"]["run_id"]
    await sign_in(page, stack)
    await page.goto(stack.api_url + f"/ui/pipelines/{pipeline_id}")

    await page.locator("#run-link").click()

    shown = page.locator("section.run:visible")
    await expect(shown).to_have_count(1)
    await expect(shown.get_by_role("heading", level=2)).to_have_text(re.compile(rf"^Run {run_id} of "))
    await expect(shown).to_contain_text(pipeline_id)
    await screenshots.take(page, "emulator-run")


async def test_the_skip_link_is_the_first_stop_of_the_keyboard(page: Page, stack: Stack) -> None:
    await sign_in(page, stack)
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()


async def test_the_list_shows_a_new_pipeline_and_its_states_without_reloading(
    page: Page, stack: Stack, gateway: Gateway, screenshots: Screenshots
) -> None:
    await sign_in(page, stack)
    await page.goto(stack.api_url + "/ui/")
    loads: list[str] = []
    page.on("load", lambda: loads.append(page.url))
    pipeline_id = new_id("ui-live")
    assert gateway.start(pipeline_id).status_code == 202

    state = page.locator(f"tr[data-pipeline='{pipeline_id}'] .state")
    await expect(state).to_have_text("succeeded", timeout=RUN_TIMEOUT_MS)
    assert loads == [], "the list changed without a reload"
    await screenshots.take(page, "live-list")
