"""Steps on the gateway's web page that several browser test modules take: sign in, start from the form."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from tests.support.stack import Stack


async def sign_in(page: Page, stack: Stack, key: str = "dev") -> None:
    """Sign ``page`` in to the stack's gateway with the test key named ``key``."""
    await page.goto(stack.api_url + "/ui")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("API key").fill(stack.keys.keys[key])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text(f"Signed in as key:{'test-' + key if key != 'dev' else 'dev'}")).to_be_visible()


async def start_from_form(page: Page, stack: Stack, pipeline_id: str, job: str = "csv-statistics") -> None:
    """Start ``job`` as ``pipeline_id`` through the start form, and land on its page."""
    await page.goto(stack.api_url + f"/ui/start?job={job}")
    await page.get_by_label("Email").fill(f"{pipeline_id}@example.com")
    await page.get_by_label("Pipeline id (optional)").fill(pipeline_id)
    await page.get_by_role("button", name="Start the pipeline").click()
    await expect(page).to_have_url(re.compile(rf"/ui/pipelines/{re.escape(pipeline_id)}$"))
