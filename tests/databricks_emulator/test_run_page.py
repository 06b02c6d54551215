"""A run's run_page_url, opened in a browser, shows that run: the page a workspace's link lands on.

The URL keeps a real workspace's shape (``/?o=<workspace>#job/<job>/run/<run>``),
so the run is named only in the fragment; headless Chromium (tests/support/browser.py)
shows what a person clicking the gateway's "Databricks run" link sees.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from databricks.sdk import WorkspaceClient
from playwright.async_api import expect

from tests.support.browser import OpenPage, Screenshots, browser_test
from tests.support.callback_receiver import CallbackReceiver
from tests.support.emulator_runs import Pipeline, run_to_end

pytestmark = browser_test


async def test_a_runs_page_url_opens_that_run_and_keeps_the_workspace_shape(
    workspace: WorkspaceClient,
    emulator: Any,  # conftest's Emulator
    receiver: CallbackReceiver,
    open_page: OpenPage,
    screenshots: Screenshots,
) -> None:
    first, second = (
        run_to_end(workspace, emulator.job_id, Pipeline(f"t-page-{uuid.uuid4().hex[:12]}", f"{receiver.url}/cb"))
        for _ in range(2)
    )
    assert first.run_page_url is not None
    assert re.fullmatch(
        rf"{re.escape(emulator.url)}/\?o=\d+#job/{emulator.job_id}/run/{first.run_id}", first.run_page_url
    )
    page = await open_page()

    await page.goto(first.run_page_url)
    await screenshots.take(page, "one-run")
    shown = page.locator("section.run:visible")
    await expect(shown).to_have_count(1)
    await expect(shown.get_by_role("heading", level=2)).to_have_text(re.compile(rf"^Run {first.run_id} of "))
    await expect(shown.locator(".state")).to_have_text("TERMINATED / SUCCESS")
    await expect(page.locator("#all-runs")).to_be_hidden()

    await page.get_by_role("link", name="Every run").click()
    await expect(page.locator("#all-runs")).to_be_visible()
    await expect(page.locator(f"#run-{first.run_id}")).to_be_visible()
    await expect(page.locator(f"#run-{second.run_id}")).to_be_visible()
    await expect(page.locator("section.run:visible")).to_have_count(0)
    await page.locator(f"#run-{second.run_id} a").click()
    await expect(page.locator("section.run:visible h2")).to_have_text(re.compile(rf"^Run {second.run_id} of "))
