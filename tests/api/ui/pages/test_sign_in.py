"""The sign-in page (ui/pages/sign_in.py) over ASGI, in process.

Signing in and out, the session cookie, and the sessions refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipeline_api.auth import keys as api_keys
from pipeline_api.ui.sessions import SESSION_COOKIE
from pipeline_api.ui.sign_outs import LocalSignOuts
from tests.support.forged_sessions import forged_session
from tests.support.keys_files import write_keys
from tests.support.pipeline_harness import UI_SECRET
from tests.support.ui_gateway import (
    ALICE_KEY,
    BOB,
    READER,
    Page,
    serve,
)


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
    # The key is pl_<id>_<secret>, and the secret itself may hold underscores.
    secret = ALICE_KEY.split("_", 2)[2]
    assert ALICE_KEY not in cookie and secret not in cookie
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


async def test_a_cookie_copied_before_sign_out_is_refused_after_it(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    await page.harness.wait_for_step_run(pipeline_id, "1")
    copied, csrf = page.client.cookies[SESSION_COOKIE], page.csrf

    assert (await page.post("/ui/sign-out")).status_code == 303

    page.client.cookies.set(SESSION_COOKIE, copied)
    read = await page.client.get(f"/ui/pipelines/{pipeline_id}")
    assert read.status_code == 303 and "signed+out" in read.headers["location"]
    cancel = await page.client.post(f"/ui/pipelines/{pipeline_id}/cancel", data={"csrf_token": csrf})
    assert cancel.status_code == 303 and cancel.headers["location"].startswith("/ui/sign-in?")
    assert not page.harness.jobs.cancelled, "nothing was cancelled"
    page.client.cookies.clear()
    await page.sign_in()
    assert 'id="pipeline-state">waiting<' in (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text
    assert (await page.client.get("/ui/start")).status_code == 200, "a new session is not the one signed out"


async def test_signed_out_sessions_are_forgotten_once_they_would_have_expired() -> None:
    now = [1_000.0]
    sign_outs = LocalSignOuts(clock=lambda: now[0])
    await sign_outs.end("morning", ends_at=1_500)
    await sign_outs.end("noon", ends_at=3_000)
    now[0] = 2_000.0

    await sign_outs.end("evening", ends_at=5_000)

    assert [await sign_outs.ended(sid) for sid in ("morning", "noon", "evening", "never")] == [False, True, True, False]


@pytest.mark.parametrize(
    "document",
    [
        {"method": "oidc https://idp.example"},
        {},  # no method at all: a cookie of the format before sessions named one
        {"method": "api_key"},  # an OIDC principal claiming to have signed in with a key
    ],
    ids=["oidc-while-off", "no-method", "method-not-the-principals"],
)
async def test_a_session_naming_a_way_of_signing_in_that_is_not_configured_is_refused(
    page: Page, document: dict[str, str]
) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    await page.harness.wait_for_step_run(pipeline_id, "1")
    page.client.cookies.clear()
    page.client.cookies.set(SESSION_COOKIE, forged_session(UI_SECRET, **({"sid": "forged-session"} | document)))

    read = await page.client.get("/ui/")
    assert read.status_code == 303 and read.headers["location"].startswith("/ui/sign-in")
    cancel = await page.client.post(f"/ui/pipelines/{pipeline_id}/cancel", data={"csrf_token": "forged-csrf"})
    assert cancel.status_code == 303 and cancel.headers["location"].startswith("/ui/sign-in")
    assert not page.harness.jobs.cancelled
