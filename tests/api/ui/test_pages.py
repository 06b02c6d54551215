"""The web page as a whole: CSRF on every action, what any page does, its place in the gateway, and a browser's view.

Each page's own tests are in pages/ (sign-in, the start form, a pipeline's page), what
the pages draw in test_views.py; their helpers are tests/support/ui_gateway.py.

The gateway runs as a deployment (API keys from a keys file, a real
UI_SESSION_SECRET) on the in-process pipeline of tests.support; there is no
pipeline index in process, so the list and timelines show their
"unavailable" state here and are looked at on the compose stack
(tests/integration/test_ui_browser.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Request as BrowserRequest
from playwright.async_api import expect

from pipeline_api.app import create_app
from pipeline_api.schemas import PipelineEvent, PipelinePage, PipelineSummary
from pipeline_api.ui import PublicPage
from pipeline_shared.models import PipelineState
from tests.support.browser import (
    DESKTOP,
    PHONE,
    OpenPage,
    Screenshots,
    broken_words,
    browser_test,
    sideways_overflow,
)
from tests.support.gateway_app import in_process_app
from tests.support.pipeline_harness import Harness
from tests.support.ui_gateway import (
    ALICE_KEY,
    CSV_RESULT,
    Page,
    settings_for,
    wait_for_state,
)
from tests.support.ui_steps import RUN_PAGE, Decision, SteppedPipelines, onboarding_steps

# ── CSRF on every action ─────────────────────────────────────────────────────


@pytest.mark.parametrize("action", ["start", "cancel", "repair", "abandon", "approve", "reject", "sign-out"])
@pytest.mark.parametrize(
    "attack",
    [
        ("no token", {}, {}),
        ("wrong token", {"csrf_token": "not-the-sessions"}, {}),
        ("cross-site origin", "valid", {"origin": "https://evil.example"}),
        ("cross-site fetch", "valid", {"sec-fetch-site": "cross-site"}),
    ],
    ids=lambda a: a[0],
)
async def test_every_state_changing_request_is_refused_without_the_token_or_from_another_site(
    page: Page, action: str, attack: tuple[str, Any, dict[str, str]]
) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    await page.harness.wait_for_step_run(pipeline_id, "1")
    name, data, headers = attack
    data = {"csrf_token": page.csrf} if data == "valid" else data
    path = {"start": "/ui/start", "sign-out": "/ui/sign-out"}.get(action, f"/ui/pipelines/{pipeline_id}/{action}")
    body = data | ({"email": "x@example.com", "id": "never-started"} if action == "start" else {})

    response = await page.client.post(path, data=body, headers=headers)

    assert response.status_code == 403, (name, response.text)
    assert "Request refused" in response.text and "Nothing was done" in response.text
    assert (await page.client.get("/ui/start")).status_code == 200, "still signed in"
    assert 'id="pipeline-state">waiting<' in (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text
    assert len(page.harness.jobs.runs_by_token) == 1, "nothing else was started"


# ── any page ─────────────────────────────────────────────────────────────────


async def test_without_an_index_the_list_and_timeline_say_they_are_unavailable(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    listing = await page.client.get("/ui/")
    assert listing.status_code == 200 and "The list of pipelines is unavailable" in listing.text
    assert "The timeline is unavailable" in (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text


async def test_bad_input_gets_a_page_saying_what_was_wrong(page: Page) -> None:
    await page.sign_in()
    assert "No such page" in (await page.client.get("/ui/nowhere/at/all")).text
    huge = await page.client.get("/ui/", params={"cursor": "x" * 5000})
    assert huge.status_code == 422 and "cursor is over 512 long" in huge.text
    date = await page.client.get("/ui/", params={"created_after": "yesterday"})
    assert date.status_code == 422 and 'id="created_after-error"' in date.text
    not_a_form = await page.client.post(
        "/ui/start", content=b"{}", headers={"content-type": "application/json", "x-csrf-token": page.csrf}
    )
    assert not_a_form.status_code == 415


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/ui/static/nope"),
        ("GET", "/ui/static/../ui.css"),
        ("GET", "/ui/pipelines/{id}/bogus"),
        ("POST", "/ui/pipelines/{id}/bogus"),
        ("GET", "/ui/pipelines/x/bogus"),
    ],
)
async def test_unknown_static_files_and_actions_are_404_pages_and_log_no_error(
    page: Page, caplog: pytest.LogCaptureFixture, method: str, path: str
) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    await page.harness.wait_for_step_run(pipeline_id, "1")

    with caplog.at_level(logging.INFO):
        response = await page.post(path.format(id=pipeline_id)) if method == "POST" else None
        response = response or await page.client.get(path.format(id=pipeline_id))

    assert response.status_code == 404 and "No such page" in response.text, response.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not page.harness.jobs.cancelled


# ── the page's place in the gateway ──────────────────────────────────────────


def test_the_pages_anyone_may_open_are_sign_in_sign_out_and_the_static_files(keys_file: Path) -> None:
    app = create_app(settings_for(keys_file))
    [ui] = [route.app for route in app.routes if getattr(route, "path", None) == "/ui"]
    public = {(method, r.path) for r in ui.routes if isinstance(r, PublicPage) for method in r.methods}
    assert public == {("GET", "/sign-in"), ("POST", "/sign-in"), ("POST", "/sign-out"), ("GET", "/static/{name:path}")}


async def test_the_callback_listener_does_not_serve_the_page(keys_file: Path) -> None:
    from pipeline_api.listeners import create_callback_app

    app = create_callback_app(create_app(settings_for(keys_file)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://callbacks") as client:
        assert (await client.get("/ui/sign-in")).status_code == 404


async def test_the_vendored_htmx_is_the_one_the_readme_names(page: Page) -> None:
    import hashlib

    readme = (Path(__file__).parents[3] / "services/api/src/pipeline_api/ui/static/vendor/README.md").read_text()
    served = await page.client.get("/ui/static/vendor/htmx.min.js")
    assert served.headers["content-type"].startswith("text/javascript")
    assert hashlib.sha256(served.content).hexdigest() in readme


def test_a_development_session_secret_is_refused_outside_development(keys_file: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="UI_SESSION_SECRET is the development default"):
        settings_for(keys_file, UI_SESSION_SECRET="dev-only-insecure-ui-session-secret-change-me")


# ── in a browser ─────────────────────────────────────────────────────────────
# The gateway served over loopback by uvicorn, on the browser's loop (tests/support/browser.py).
# In process there is no pipeline index: a ShownIndex stands in for it with the
# list and timelines a test gives it, so the list and the chart can be looked at.

#: A result as wide as a real one gets: many columns, long names and values.
WIDE_RESULT = {
    "source": "/Workspace/Shared/pipelines/samples/customers-with-a-rather-long-file-name.csv",
    "row_count": 1200,
    "column_count": 3,
    "columns": [
        {
            "name": name,
            "type": kind,
            "count": 1200,
            "missing": 3,
            "distinct": 1187,
            "min": "Aaliyah" if kind == "string" else 0.5,
            "max": "Zimmermann-Oppenheimer" if kind == "string" else 98765.4321,
            "mean": None if kind == "string" else 4321.125,
            "most_common": "Montgomery-Wellington",
        }
        for name, kind in (
            ("customer_identifier", "string"),
            ("lifetime_value_in_euros", "number"),
            ("postal_address_city", "string"),
        )
    ],
}


class ShownIndex:
    """The pipeline index as the page reads it (a page of the list, a timeline), holding what a test gives it."""

    def __init__(self) -> None:
        self.summaries: list[PipelineSummary] = []
        self.timelines: dict[str, list[PipelineEvent]] = {}

    async def page(self, principal: Any, query: Any) -> PipelinePage:
        return PipelinePage(items=self.summaries, next_cursor=None, total=len(self.summaries))

    async def timeline(self, pipeline_id: str) -> list[PipelineEvent]:
        return self.timelines.get(pipeline_id, [])

    def add(self, pipeline_id: str, *kinds_ago: tuple[str, float], state: str = "waiting") -> None:
        """A pipeline in the list, and its timeline: each event a kind and how many seconds ago it happened."""
        now = datetime.now(UTC)
        self.timelines[pipeline_id] = [
            PipelineEvent(seq=n, at=now - timedelta(seconds=ago), kind=kind, summary=f"{kind.replace('_', ' ')}.")
            for n, (kind, ago) in enumerate(kinds_ago)
        ]
        self.summaries.append(
            PipelineSummary(
                id=pipeline_id,
                job="csv-statistics",
                state=PipelineState(state),
                owner="key:alice",
                email="someone-with-a-long-address@example.com",
                created_at=now,
                updated_at=now,
                run_id=1234567890123,
                run_page_url="http://localhost:8080/?o=1#job/1001/run/1234567890123",
            )
        )


@contextlib.asynccontextmanager
async def serve_http(keys_file: Path) -> AsyncIterator[tuple[str, Page, ShownIndex]]:
    """The gateway on a free loopback port: its URL, a signed-in client of its own, and its stand-in index."""
    harness = Harness(autostart=False)
    app = in_process_app(settings_for(keys_file), harness)
    listening = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        while not server.started:
            assert not serving.done(), "the gateway stopped while starting"
            await asyncio.sleep(0.01)
        index = ShownIndex()
        app.state.index = index
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            page = Page(client, harness, keys_file, app)
            await page.sign_in()
            yield f"http://127.0.0.1:{listening.getsockname()[1]}", page, index
    finally:
        server.should_exit = True
        await serving


@pytest_asyncio.fixture(loop_scope="session")
async def served(keys_file: Path) -> AsyncIterator[tuple[str, Page, ShownIndex]]:
    async with serve_http(keys_file) as found:
        yield found


async def browser_signed_in(open_page: OpenPage, url: str, **viewport: Any) -> Any:
    browser = await open_page(**(viewport or DESKTOP))
    await browser.goto(url + "/ui/sign-in")
    await browser.get_by_label("API key").fill(ALICE_KEY)
    await browser.get_by_role("button", name="Sign in").click()
    await expect(browser.get_by_text("Signed in as key:alice")).to_be_visible()
    return browser


#: The smallest size a chart's text may be drawn at, in CSS pixels.
MIN_CHART_TEXT_PX = 11


@browser_test
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
async def test_every_page_reads_without_sideways_scrolling_or_broken_words(
    served: tuple[str, Page, ShownIndex], open_page: OpenPage, screenshots: Screenshots, viewport: dict[str, Any]
) -> None:
    url, client, index = served
    # 60 characters with nowhere to wrap, in the page's title, its facts and the email's Message-ID.
    pipeline_id = await client.start(id=f"ui{uuid.uuid4().hex}{uuid.uuid4().hex[:26]}")
    await client.harness.wait_for_step_run(pipeline_id, "1")
    await client.harness.settle_step(pipeline_id, "1", status="success", result=WIDE_RESULT)
    await wait_for_state(client, pipeline_id, "succeeded")
    index.add(
        pipeline_id,
        ("started", 75),
        ("run_triggered", 74.8),
        ("callback_received", 5),
        ("email_delivered", 4.5),
        ("finished", 4.5),
        state="succeeded",
    )
    browser = await browser_signed_in(open_page, url, **viewport)

    for step, path in (
        ("list", "/ui/"),
        ("start", "/ui/start"),
        ("pipeline", f"/ui/pipelines/{pipeline_id}"),
        ("cancel", f"/ui/pipelines/{pipeline_id}/cancel"),
        ("not-found", "/ui/pipelines/nobody-knows"),
    ):
        await browser.goto(url + path)
        await screenshots.take(browser, step)
        assert await sideways_overflow(browser) == 0, f"the {step} page scrolls sideways"

    await browser.goto(url + f"/ui/pipelines/{pipeline_id}")
    assert await broken_words(browser, ".result-table, #result-fields, .facts, .phases") == []
    # The result table scrolls in its own box instead.
    await expect(browser.locator("#result-columns")).to_be_visible()
    # Drawn sizes, after the chart is scaled to the page: the font size times the drawing's scale.
    sizes = await browser.locator("figure.chart svg text").evaluate_all(
        "texts => texts.map(t => parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a)"
    )
    assert sizes and min(sizes) >= MIN_CHART_TEXT_PX, sizes


@browser_test
async def test_the_elapsed_time_of_a_phase_still_going_ticks_on_the_page(
    served: tuple[str, Page, ShownIndex], open_page: OpenPage, screenshots: Screenshots
) -> None:
    url, client, index = served
    pipeline_id = await client.start()
    await client.harness.wait_for_step_run(pipeline_id, "1")
    index.add(pipeline_id, ("started", 12), ("run_triggered", 11))
    browser = await browser_signed_in(open_page, url)
    await browser.goto(url + f"/ui/pipelines/{pipeline_id}")
    so_far = browser.locator(".chart .phase-running .elapsed")
    first = await so_far.text_content()
    assert first is not None and re.fullmatch(r"\d+\.\d s so far", first), first
    assert 11 <= float(first.split()[0]) < 30, "counted from the run's trigger, 11 s before the page was made"

    # Without a reload: the page's own script counts on between the server's answers.
    await expect(so_far).not_to_have_text(first, timeout=3000)
    later = await so_far.text_content()
    assert later is not None and float(later.split()[0]) > float(first.split()[0]), (first, later)
    await expect(browser.locator(".phases .elapsed")).to_have_text(later)
    await screenshots.take(browser, "running")


@browser_test
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
async def test_a_person_reads_the_steps_and_approves_the_gate_with_a_comment_in_a_browser(
    served: tuple[str, Page, ShownIndex], open_page: OpenPage, screenshots: Screenshots, viewport: dict[str, Any]
) -> None:
    url, client, _ = served
    pipeline_id = f"onboarding-{uuid.uuid4().hex[:8]}"
    pipelines = SteppedPipelines(client.app.state.pipelines)
    client.app.state.pipelines = pipelines
    # A gate alice may decide: she holds its scope (cancel, here; "approve" once the gateway knows it).
    await pipelines.show(pipeline_id, "awaiting_approval", onboarding_steps(["cancel"]))
    browser = await browser_signed_in(open_page, url, **viewport)

    try:
        await browser.goto(url + f"/ui/pipelines/{pipeline_id}")
        steps = browser.get_by_role("table", name="Each step, in the order the pipeline's code took it")
        await expect(steps.get_by_role("row")).to_have_count(5)
        await expect(steps.get_by_role("link", name="run 702")).to_have_attribute("href", f"{RUN_PAGE}702")
        chart = browser.get_by_role("img", name=re.compile(f"Steps of pipeline {pipeline_id} over"))
        await expect(chart).to_be_visible()
        await expect(browser.locator(".steps-chart g.step-bar")).to_have_count(4)
        await screenshots.take(browser, "steps")
        assert await sideways_overflow(browser) == 0, "the page of steps scrolls sideways"

        await steps.get_by_role("link", name="Approve…").click()
        await expect(browser.get_by_text("high-risk: Risk score 82: activate?")).to_be_visible()
        await browser.get_by_label("Comment (optional)").fill("Score checked against the upload.")
        await screenshots.take(browser, "approve")
        await browser.get_by_role("button", name="Yes, approve it").click()

        await expect(browser).to_have_url(re.compile(rf"/ui/pipelines/{re.escape(pipeline_id)}\?done=approve$"))
        await expect(browser.get_by_role("status").filter(has_text="Approve: asked for.")).to_be_visible()
    finally:
        client.app.state.pipelines = pipelines.real
    assert pipelines.decisions == [Decision("approve", "key:alice", "4", "Score checked against the upload.")]


async def result_wording(page: Page, pipeline_id: str) -> str:
    html = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text
    found = re.search(r'<p class="none" id="no-result">([^<]*)</p>', html)
    assert found, "no word about the result"
    return found.group(1)


async def test_a_pipeline_without_a_result_says_why_by_its_state(page: Page) -> None:
    await page.sign_in()
    running = await page.start()
    await page.harness.wait_for_step_run(running, "1")
    await wait_for_state(page, running, "waiting")
    assert await result_wording(page, running) == "None yet: the run has not reported."

    failed = await page.start(job="nightly-refresh")  # no repair window: a failure ends it
    await page.harness.wait_for_step_run(failed, "1")
    await page.harness.settle_step(failed, "1", status="failure", error={"type": "KeyError", "message": "'colum'"})
    await wait_for_state(page, failed, "failed")
    assert await result_wording(page, failed) == "None: the pipeline failed before its run reported one."

    cancelled = await page.start()
    await page.harness.wait_for_step_run(cancelled, "1")
    await page.post(f"/ui/pipelines/{cancelled}/cancel")
    await wait_for_state(page, cancelled, "cancelled")
    assert await result_wording(page, cancelled) == "None: the pipeline was cancelled before its run reported one."


async def test_after_a_repair_is_asked_for_the_page_shows_it_running_and_the_error_as_history(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    await page.harness.wait_for_step_run(pipeline_id, "1")
    await page.harness.settle_step(pipeline_id, "1", status="failure", error={"type": "KeyError", "message": "'colum'"})
    awaiting = await wait_for_state(page, pipeline_id, "awaiting_repair")
    assert 'id="current-error"' in awaiting and "KeyError" in awaiting

    repaired = await page.post(f"/ui/pipelines/{pipeline_id}/repair", {"param.source": ""})
    assert repaired.status_code == 303, repaired.text
    html = await wait_for_state(page, pipeline_id, "waiting")
    assert 'id="current-error"' not in html, "the old error is not what is happening now"
    assert 'id="now-happening"' in html
    async with asyncio.timeout(5):  # once the repair is made, the page names its attempt
        while "Attempt 1 is running" not in html:
            await asyncio.sleep(0.05)
            html = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text
    now = re.search(r'<p class="notice" id="now-happening">(.*?)</p>', html, re.S)
    assert now and "Attempt 1 is running: a repair asked for by key:alice" in " ".join(now.group(1).split())
    assert 'id="current-error"' not in html
    history = html[html.index('id="earlier-error"') :]
    assert "Why attempt 0 failed" in history and "KeyError" in history


async def test_the_pages_and_the_gateway_answer_with_its_icon(page: Page) -> None:
    await page.sign_in()
    html = (await page.client.get("/ui/start")).text
    assert '<link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml">' in html
    for path in ("/ui/static/favicon.svg", "/favicon.ico"):
        icon = await page.client.get(path, headers={"authorization": "", "cookie": ""})
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml", path
        assert icon.content.startswith(b"<svg"), path


async def test_the_api_documentation_pages_use_only_assets_the_gateway_serves(page: Page) -> None:
    for path, count in (("/docs", 2), ("/redoc", 1)):
        html = (await page.client.get(path)).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), (path, assets)
        assert len([a for a in assets if a.startswith("/docs/assets/")]) == count, (path, assets)
        assert "https://" not in html.replace("https://validator", ""), path
        for asset in assets:
            answered = await page.client.get(asset)
            assert answered.status_code == 200, asset
    missing = await page.client.get("/docs/assets/nothing.js")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


@browser_test
@pytest.mark.parametrize(("path", "shown"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")])
async def test_the_api_documentation_renders_with_no_request_leaving_the_machine(
    served: tuple[str, Page, ShownIndex], open_page: OpenPage, screenshots: Screenshots, path: str, shown: str
) -> None:
    url, _, _ = served
    browser = await open_page()
    requested: list[str] = []

    blocked: list[tuple[str, str]] = []

    def note(request: BrowserRequest) -> None:
        requested.append(request.url)

    def refused(request: BrowserRequest) -> None:
        if not request.url.startswith("http://127.0.0.1:"):
            blocked.append((request.url, request.failure or ""))

    browser.on("requestfinished", note)
    browser.on("requestfailed", refused)
    await browser.goto(url + path)
    await expect(browser.locator(shown).first).to_be_visible(timeout=15_000)
    await expect(browser.get_by_text("/pipelines/{pipeline_id}").first).to_be_attached()
    await screenshots.take(browser, path.strip("/"))
    # A bundle that tries to reach out (ReDoc's footer logo) is stopped by the page's policy: nothing leaves.
    elsewhere = [u for u in requested if not u.startswith(("http://127.0.0.1:", "data:", "blob:"))]
    assert elsewhere == [], elsewhere
    assert [u for u in blocked if u[1] not in ("csp", "net::ERR_BLOCKED_BY_CSP")] == [], blocked


async def test_a_final_pipeline_keeps_polling_until_the_index_shows_its_end(keys_file: Path) -> None:
    """The state comes from Resonate, the timeline from the index, which trails it: stopping at the
    final state left a page whose timeline never showed the end (seen in a CI run under load)."""
    async with serve_http(keys_file) as (_, page, index):
        pipeline_id = await page.start()
        await page.harness.wait_for_step_run(pipeline_id, "1")
        await page.harness.settle_step(pipeline_id, "1", status="success", result=CSV_RESULT)
        index.add(pipeline_id, ("started", 3), ("run_triggered", 2), state="waiting")
        behind = await wait_for_state(page, pipeline_id, "succeeded")
        assert "hx-trigger" in behind, "the index has not shown the end yet: the page must keep asking"

        index.add(pipeline_id, ("started", 3), ("run_triggered", 2), ("finished", 0), state="succeeded")
        caught_up = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text
        assert "hx-trigger" not in caught_up, "a final pipeline whose timeline has ended stops polling"
