"""The web page over ASGI, in process: sign-in, sessions, CSRF, the start form, a pipeline's page and its actions.

The gateway runs as a deployment (API keys from a keys file, a real
UI_SESSION_SECRET) on the in-process pipeline of tests.support; there is no
pipeline index in process, so the list and timelines show their
"unavailable" state here and are looked at on the compose stack
(tests/integration/test_ui_browser.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline_api import keys as api_keys
from pipeline_api.app import create_app
from pipeline_api.keys import KeyEntry, mint
from pipeline_api.principals import Scope
from pipeline_api.schemas import PipelineEvent
from pipeline_api.settings import GatewaySettings
from pipeline_api.ui import PublicPage
from pipeline_api.ui.sessions import SESSION_COOKIE
from pipeline_api.ui.views import CHART_WIDTH, LABEL_WIDTH, Phase, chart, phases, result_view
from pipeline_shared.resonate_client import ResonateLink
from tests.support.pipeline_harness import CATALOGUE_FILE, SECRET, UI_SECRET, UNUSED_DATABASE_URL, Harness

ALICE_KEY, ALICE = mint("alice", frozenset({Scope.START, Scope.READ, Scope.CANCEL}), key_id="alice")
BOB_KEY, BOB = mint("bob", frozenset({Scope.START, Scope.READ, Scope.CANCEL}), key_id="bob")
READER_KEY, READER = mint("reader", frozenset({Scope.READ}), key_id="reader")

CSV_RESULT = {
    "source": "built-in sample",
    "row_count": 3,
    "column_count": 2,
    "columns": [
        {"name": "city", "type": "string", "count": 3, "missing": 0, "distinct": 3},
        {
            "name": "temp",
            "type": "number",
            "count": 3,
            "missing": 0,
            "distinct": 2,
            "min": 1.5,
            "max": 9.0,
            "mean": 4.0,
        },
    ],
}


def write_keys(path: Path, *entries: KeyEntry) -> None:
    draft = path.with_suffix(".new")
    draft.write_text("\n\n".join(entry.as_toml() for entry in entries) + "\n")
    draft.replace(path)


class Page:
    """A browser's view of the gateway: one cookie jar, the page's CSRF token read from what it was shown."""

    def __init__(self, client: httpx.AsyncClient, harness: Harness, keys_file: Path) -> None:
        self.client = client
        self.harness = harness
        self.keys_file = keys_file
        self.csrf = ""

    async def sign_in(self, credential: str = ALICE_KEY, **extra: str) -> httpx.Response:
        form = await self.client.get("/ui/sign-in")
        token = hidden(form.text, "sign_in_token")
        response = await self.client.post(
            "/ui/sign-in", data={"credential": credential, "sign_in_token": token, "next": "/ui/"} | extra
        )
        if response.status_code == 303:
            self.csrf = hidden((await self.client.get("/ui/")).text, "csrf_token")
        return response

    async def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return await self.client.post(path, data={"csrf_token": self.csrf} | (data or {}), **kwargs)

    async def start(self, **fields: str) -> str:
        pipeline_id = fields.pop("id", f"ui-{uuid.uuid4().hex[:10]}")
        response = await self.post("/ui/start", {"id": pipeline_id, "email": "me@example.com"} | fields)
        assert response.status_code == 303, response.text
        assert response.headers["location"] == f"/ui/pipelines/{pipeline_id}"
        return pipeline_id


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden {name} in the page"
    return match.group(1)


def settings_for(keys_file: Path, **overrides: Any) -> GatewaySettings:
    return GatewaySettings(
        **{
            "ENVIRONMENT": "test",
            "RECIPIENT_DOMAINS": "*",
            "RESONATE_DATABASE_URL": UNUSED_DATABASE_URL,
            "CALLBACK_SIGNING_SECRET": SECRET,
            "UI_SESSION_SECRET": UI_SECRET,
            "JOB_CATALOGUE_FILE": CATALOGUE_FILE,
            "API_KEYS_FILE": keys_file,
        }
        | overrides
    )


@contextlib.asynccontextmanager
async def serve(keys_file: Path, base_url: str = "http://gateway", **overrides: Any) -> AsyncIterator[Page]:
    harness = Harness(autostart=False)
    app = create_app(
        settings_for(keys_file, **overrides), connect_resonate=lambda _: ResonateLink(harness.resonate, None)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield Page(client, harness, keys_file)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys.toml"
    write_keys(path, ALICE, BOB, READER)
    return path


@pytest.fixture
async def page(keys_file: Path) -> AsyncIterator[Page]:
    async with serve(keys_file) as page:
        yield page


async def wait_for_state(page: Page, pipeline_id: str, state: str) -> str:
    async with asyncio.timeout(10):
        while True:
            html = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text
            if f'id="pipeline-state">{state.replace("_", " ")}<' in html:
                return html
            await asyncio.sleep(0.05)


# ── signing in ───────────────────────────────────────────────────────────────


async def test_a_page_without_a_session_sends_to_sign_in_with_where_it_was(page: Page) -> None:
    response = await page.client.get("/ui/start?job=word-frequencies")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/sign-in?next=%2Fui%2Fstart%3Fjob%3Dword-frequencies"
    fragment = await page.client.get("/ui/fragments/pipelines", headers={"hx-request": "true"})
    assert fragment.headers["hx-redirect"].startswith("/ui/sign-in?")


async def test_sign_in_sets_a_signed_http_only_lax_cookie_without_the_key(page: Page) -> None:
    response = await page.sign_in()

    assert (response.status_code, response.headers["location"]) == (303, "/ui/")
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "path=/ui" in flags
    assert "secure" not in flags, "plain http: a Secure cookie would never come back"
    assert ALICE_KEY not in cookie and ALICE_KEY.split("_")[-1] not in cookie
    assert "Signed in as <strong>key:alice</strong>" in (await page.client.get("/ui/start")).text


async def test_over_https_the_cookie_is_secure(keys_file: Path) -> None:
    async with serve(keys_file, base_url="https://gateway") as page:
        response = await page.sign_in()
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    assert "secure" in [part.strip().lower() for part in cookie.split(";")]


async def test_a_wrong_key_is_refused_on_the_form_and_sets_no_session(page: Page) -> None:
    response = await page.sign_in("pl_alice_" + "x" * 43)

    assert response.status_code == 401
    assert "Not signed in: the API key is not valid" in response.text
    assert not any(c.startswith(SESSION_COOKIE) for c in response.headers.get_list("set-cookie"))
    assert (await page.client.get("/ui/start")).status_code == 303


async def test_sign_in_without_the_forms_token_or_from_another_site_is_refused(page: Page) -> None:
    await page.client.get("/ui/sign-in")
    forged = await page.client.post("/ui/sign-in", data={"credential": ALICE_KEY, "sign_in_token": "guess"})
    assert forged.status_code == 403 and "sign in again" in forged.text
    cross = await page.client.post(
        "/ui/sign-in", data={"credential": ALICE_KEY}, headers={"origin": "https://evil.example"}
    )
    assert cross.status_code == 403 and "another origin (https://evil.example)" in cross.text
    assert (await page.client.get("/ui/start")).status_code == 303, "neither signed anybody in"


async def test_next_goes_only_to_a_page_of_this_site(page: Page) -> None:
    for target, expected in [
        ("/ui/start", "/ui/start"),
        ("https://evil.example/ui/", "/ui/"),
        ("//evil.example", "/ui/"),
    ]:
        page.client.cookies.clear()
        assert (await page.sign_in(next=target)).headers["location"] == expected


async def test_a_revoked_key_ends_its_sessions(page: Page) -> None:
    await page.sign_in()
    assert (await page.client.get("/ui/start")).status_code == 200

    write_keys(page.keys_file, BOB, READER)
    await asyncio.sleep(api_keys.RELOAD_CHECK_SECONDS + 0.1)

    response = await page.client.get("/ui/start")
    assert response.status_code == 303 and "no+longer+valid" in response.headers["location"]


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(page: Page) -> None:
    await page.sign_in()
    refused = await page.client.post("/ui/sign-out", data={"csrf_token": "wrong"})
    assert refused.status_code == 403
    assert (await page.client.get("/ui/start")).status_code == 200, "a refused sign-out changes nothing"

    response = await page.post("/ui/sign-out")
    assert (response.status_code, response.headers["location"]) == (303, "/ui/sign-in?signed_out=1")
    assert (await page.client.get("/ui/start")).status_code == 303


# ── CSRF on every action ─────────────────────────────────────────────────────


@pytest.mark.parametrize("action", ["start", "cancel", "repair", "abandon", "sign-out"])
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
    await page.harness.wait_for_run_of(pipeline_id)
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


# ── starting ─────────────────────────────────────────────────────────────────


async def test_the_start_form_documents_each_parameter(page: Page) -> None:
    await page.sign_in()
    html = (await page.client.get("/ui/start?job=nightly-refresh")).text
    assert '<select id="param-table" name="param.table"' in html
    assert all(f'<option value="{v}"' in html for v in ("sales", "inventory", "customers"))
    words = (await page.client.get("/ui/start?job=word-frequencies")).text
    assert "The text to count words in." in words and "(required)" in words and "^(100|[1-9][0-9]?)$" in words
    admin_only = (await page.client.get("/ui/start?job=customer-report")).text
    assert "You may not start a job called &#39;customer-report&#39;" in admin_only


async def test_start_form_errors_are_shown_at_the_field_they_concern(page: Page) -> None:
    await page.sign_in()
    response = await page.post(
        "/ui/start",
        {
            "job": "word-frequencies",
            "email": "not-an-email",
            "id": "bad id!",
            "timeout_seconds": "999999",
            "param.top": "0",
        },
    )

    assert response.status_code == 422
    html = response.text
    for name in ("email", "id", "param-text", "param-top"):
        assert f'id="{name}-error"' in html, name
    assert re.search(r'id="param-text-error">is required', html)
    assert 'id="param-top-error">must match' in html
    assert 'value="not-an-email"' in html, "what was typed is kept"
    assert page.harness.jobs.runs_by_token == {}
    too_long = await page.post(
        "/ui/start",
        {"job": "word-frequencies", "email": "a@example.com", "param.text": "a b", "timeout_seconds": "999999"},
    )
    assert (
        too_long.status_code == 422
        and 'id="timeout_seconds-error">is 999999; this job allows at most 86400' in too_long.text
    )
    unknown = await page.post("/ui/start", {"job": "no-such-job", "email": "a@example.com"})
    assert unknown.status_code == 422 and "no job &#39;no-such-job&#39; in the catalogue" in unknown.text


async def test_a_reader_may_not_open_the_start_form(page: Page) -> None:
    await page.sign_in(READER_KEY)
    response = await page.client.get("/ui/start")
    assert response.status_code == 403 and "needs the &#39;start&#39; scope" in response.text


async def test_a_start_redirects_to_the_pipelines_page(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start(job="word-frequencies", **{"param.text": "to be or not to be"})

    html = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text
    assert f"Pipeline <code>{pipeline_id}</code>" in html
    assert "word-frequencies" in html and "to be or not to be" in html
    assert page.harness.jobs.run_now_calls[0]["text"] == "to be or not to be"
    assert page.harness.jobs.run_now_calls[0]["top"] == "10", "an empty field takes the default"


# ── one pipeline ─────────────────────────────────────────────────────────────


async def test_cancel_goes_through_a_confirmation_and_cancels(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    await page.harness.wait_for_run_of(pipeline_id)
    html = await wait_for_state(page, pipeline_id, "waiting")
    assert f'href="/ui/pipelines/{pipeline_id}/cancel"' in html

    confirm = await page.client.get(f"/ui/pipelines/{pipeline_id}/cancel")
    assert confirm.status_code == 200 and "Yes, cancel it" in confirm.text
    response = await page.post(f"/ui/pipelines/{pipeline_id}/cancel")

    assert (response.status_code, response.headers["location"]) == (303, f"/ui/pipelines/{pipeline_id}?done=cancel")
    await wait_for_state(page, pipeline_id, "cancelled")
    assert page.harness.jobs.cancelled, "the run was cancelled"


@pytest.mark.parametrize("action", ["repair", "abandon"])
async def test_repair_and_abandon_are_refused_with_the_reason_when_not_awaiting_repair(page: Page, action: str) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    await page.harness.wait_for_run_of(pipeline_id)

    response = await page.post(f"/ui/pipelines/{pipeline_id}/{action}")

    assert response.status_code == 409
    assert f"pipeline &#39;{pipeline_id}&#39; is not awaiting repair: it is waiting" in response.text
    assert "Traceback" not in response.text


async def test_another_principals_pipeline_is_a_404_page_like_a_missing_one(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    page.client.cookies.clear()
    await page.sign_in(BOB_KEY)

    for path in (f"/ui/pipelines/{pipeline_id}", f"/ui/pipelines/{pipeline_id}/cancel", "/ui/pipelines/never-was"):
        response = await page.client.get(path)
        assert response.status_code == 404 and "No such pipeline" in response.text, path
    refused = await page.post(f"/ui/pipelines/{pipeline_id}/cancel")
    assert refused.status_code == 404
    assert not page.harness.jobs.cancelled


async def test_a_finished_pipeline_shows_its_result_as_tables_and_its_email(keys_file: Path) -> None:
    async with serve(keys_file, MAILSINK_UI_URL="http://localhost:8025") as page:
        await page.sign_in()
        pipeline_id = await page.start()
        await page.harness.wait_for_run_of(pipeline_id)
        await page.harness.settle_id(pipeline_id, status="success", result=CSV_RESULT)
        html = await wait_for_state(page, pipeline_id, "succeeded")

    table = html[html.index('id="result-columns"') : html.index("</table>", html.index('id="result-columns"'))]
    headers = re.findall(r'<th scope="col">([^<]*)</th>', table)
    assert headers == ["name", "type", "count", "missing", "distinct", "min", "max", "mean"]
    assert '<th scope="row">temp</th>' in table and ">9<" in table
    assert '<tr><th scope="row">row_count</th><td>3</td></tr>' in html
    assert "hx-trigger" not in html, "a final pipeline stops polling"
    message_id = f"<{pipeline_id}.0@test>"
    assert "http://localhost:8025/ui/by-message-id/%3C" in html and "Open it in the mail sink" in html
    assert message_id.replace("<", "&lt;").replace(">", "&gt;") in html


async def test_without_an_index_the_list_and_timeline_say_they_are_unavailable(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    listing = await page.client.get("/ui/")
    assert listing.status_code == 200 and "The list of pipelines is unavailable" in listing.text
    assert "The timeline is unavailable" in (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text


async def test_the_live_fragment_answers_204_while_nothing_changed(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    await page.harness.wait_for_run_of(pipeline_id)
    html = await wait_for_state(page, pipeline_id, "waiting")
    live = re.search(r'hx-get="([^"]+/live\?version=[0-9a-f]+)"', html)
    assert live is not None
    assert (await page.client.get(live.group(1))).status_code == 204
    await page.harness.settle_id(pipeline_id, status="success", result={"rows": 1})
    await wait_for_state(page, pipeline_id, "succeeded")
    changed = await page.client.get(live.group(1))
    assert changed.status_code == 200 and "succeeded" in changed.text


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


# ── the page's place in the gateway ──────────────────────────────────────────


def test_the_pages_anyone_may_open_are_sign_in_sign_out_and_the_static_files(keys_file: Path) -> None:
    app = create_app(settings_for(keys_file))
    [ui] = [route.app for route in app.routes if getattr(route, "path", None) == "/ui"]
    public = {(method, r.path) for r in ui.routes if isinstance(r, PublicPage) for method in r.methods}
    assert public == {("GET", "/sign-in"), ("POST", "/sign-in"), ("POST", "/sign-out"), ("GET", "/static/{name:path}")}


async def test_the_callback_listener_does_not_serve_the_page(keys_file: Path) -> None:
    from pipeline_api.app import create_callback_app

    app = create_callback_app(create_app(settings_for(keys_file)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://callbacks") as client:
        assert (await client.get("/ui/sign-in")).status_code == 404


async def test_the_vendored_htmx_is_the_one_the_readme_names(page: Page) -> None:
    import hashlib

    readme = (Path(__file__).parents[2] / "services/api/src/pipeline_api/ui/static/vendor/README.md").read_text()
    served = await page.client.get("/ui/static/vendor/htmx.min.js")
    assert served.headers["content-type"].startswith("text/javascript")
    assert hashlib.sha256(served.content).hexdigest() in readme


def test_a_development_session_secret_is_refused_outside_development(keys_file: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="UI_SESSION_SECRET is the development default"):
        settings_for(keys_file, UI_SESSION_SECRET="dev-only-insecure-ui-session-secret-change-me")


def test_result_view_lays_out_records_as_tables_and_the_rest_as_fields() -> None:
    view = result_view(CSV_RESULT)
    assert [name for name, _ in view.fields] == ["source", "row_count", "column_count"]
    [columns] = view.tables
    assert columns.headers[:2] == ["name", "type"] and columns.rows[0][0] == "city"


def test_the_chart_draws_each_phase_on_one_time_axis_with_its_duration_where_it_can_be_read() -> None:
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    drawn = [
        Phase("queued", t0, t0 + timedelta(milliseconds=130)),
        Phase("running", t0 + timedelta(milliseconds=130), t0 + timedelta(seconds=1.75)),
        Phase("emailing", t0 + timedelta(seconds=1.75), t0 + timedelta(seconds=2)),
    ]
    drawing = chart(drawn)
    assert drawing is not None
    queued, running, emailing = drawing.bars
    assert queued.x == LABEL_WIDTH and round(emailing.x + emailing.width) <= CHART_WIDTH - 30
    assert queued.x + queued.width == pytest.approx(running.x, abs=0.2)
    assert running.width > 5 * emailing.width
    # Beside the bar where there is room; the last, at the axis's end, gets its label on its left.
    assert running.label_at[1:] == ("start", False) and running.label_at[0] > running.x + running.width
    assert emailing.label_at[1:] == ("end", False) and emailing.label_at[0] < emailing.x
    assert [text for _, text in drawing.ticks][-1] == "2.0 s"


def test_a_repaired_pipelines_phases_are_read_off_its_timeline() -> None:
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    kinds = [
        "started", "run_triggered", "callback_received", "awaiting_repair", "email_delivered",
        "repair_requested", "repaired", "callback_received", "email_delivered", "finished",
    ]  # fmt: skip
    events = [
        PipelineEvent(seq=n, at=t0 + timedelta(seconds=10 * n), kind=kind, summary=kind) for n, kind in enumerate(kinds)
    ]
    drawn = phases(events, final=True, now=t0 + timedelta(hours=1))
    assert [(p.name, p.seconds) for p in drawn] == [
        ("queued", 10),
        ("running", 10),
        ("awaiting repair", 20),
        ("repairing", 10),
        ("emailing", 10),
    ]
    still = phases(events[:4], final=False, now=t0 + timedelta(seconds=95))
    assert (still[-1].name, still[-1].open, still[-1].seconds) == ("awaiting repair", True, 65)
