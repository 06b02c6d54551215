"""Hostile web page sessions on the compose stack: replayed after sign-out, forged, tampered with.

Each test holds a pipeline waiting on a run that hangs, tries to read and
cancel it with the session under test, and checks the refusal (sent to sign
in, saying why) and that nothing changed: the pipeline still waits, its run
still runs, and the timeline records no cancel.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from urllib.parse import unquote_plus

import httpx
import psycopg
import pytest

from pipeline_api.settings import DEVELOPMENT_UI_SESSION_SECRET
from pipeline_api.ui.sessions import SESSION_COOKIE
from tests.support.forged_sessions import forged_session
from tests.support.stack import Stack
from tests.support.stack_clients import Emulator, Gateway, UiBrowser, new_id


def sent_to_sign_in(response: httpx.Response) -> str:
    """Why the page sent the request to sign in (the notice it will show), failing if it did not."""
    assert response.status_code == 303, (response.status_code, response.text[:300])
    location = response.headers["location"]
    assert location.startswith("/ui/sign-in?"), location
    reason = re.search(r"reason=([^&]*)", location)
    return unquote_plus(reason.group(1)) if reason else ""


@pytest.fixture
def waiting(gateway: Gateway, emulator: Emulator) -> Iterator[str]:
    """A pipeline of the development key's principal, waiting on a run that hangs; cancelled after the test."""
    pipeline_id = new_id("hostile-session")
    emulator.plan(pipeline_id, notebook="hang")
    assert gateway.start(pipeline_id, timeout_seconds=600).status_code == 202
    gateway.wait_for(pipeline_id, "waiting")
    yield pipeline_id
    gateway.http.post(f"/pipelines/{pipeline_id}/cancel")


def assert_unchanged(gateway: Gateway, emulator: Emulator, pipeline_id: str) -> None:
    time.sleep(0.5)  # a cancel, had one been made, would have settled by now
    assert gateway.status(pipeline_id)["state"] == "waiting"
    assert emulator.runs(pipeline_id)[0]["result_state"] != "CANCELED", "the run still runs"
    kinds = [event["kind"] for event in gateway.timeline(pipeline_id)["events"]]
    assert "cancel_requested" not in kinds, kinds


def test_a_cookie_copied_before_sign_out_is_refused_after_it_even_by_a_restarted_gateway(
    stack: Stack, gateway: Gateway, emulator: Emulator, waiting: str
) -> None:
    browser = UiBrowser(stack.api_url)
    browser.sign_in()
    assert browser.http.get(f"/ui/pipelines/{waiting}").status_code == 200
    copied, csrf = browser.http.cookies[SESSION_COOKIE], browser.csrf
    with psycopg.connect(stack.resonate_dsn(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pipelines.ended_ui_session (session_id, ends_at) "
            "VALUES ('expired-before-this-test', now() - interval '1 hour')"
        )

    signed_out = browser.http.post("/ui/sign-out", data={"csrf_token": csrf})
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/ui/sign-in?signed_out=1")

    thief = UiBrowser(stack.api_url)
    thief.use(copied)
    assert "signed out" in sent_to_sign_in(thief.http.get(f"/ui/pipelines/{waiting}"))
    assert "signed out" in sent_to_sign_in(thief.cancel(waiting, csrf))
    assert_unchanged(gateway, emulator, waiting)
    # Kept where every replica reads it, not in the gateway's memory: a gateway started afresh refuses it too.
    with psycopg.connect(stack.resonate_dsn(), autocommit=True) as conn:
        live = conn.execute("SELECT count(*) FROM pipelines.ended_ui_session WHERE ends_at > now()").fetchone()
        expired = conn.execute(
            "SELECT count(*) FROM pipelines.ended_ui_session WHERE session_id = 'expired-before-this-test'"
        ).fetchone()
    assert live is not None and live[0] >= 1
    assert expired == (0,), "a sign-out deletes the records of sessions that have expired by themselves"
    stack.restart("api")
    assert "signed out" in sent_to_sign_in(thief.cancel(waiting, csrf))
    assert_unchanged(gateway, emulator, waiting)

    browser.sign_in()  # a new session is not the one signed out
    assert browser.http.get(f"/ui/pipelines/{waiting}").status_code == 200


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({}, "no longer accepts OIDC tokens"),
        ({"method": "api_key"}, "never offered"),
        ({"method": None}, "never offered"),
        ({"kind": "key", "name": "dev", "key_id": "dev"}, "never offered"),
    ],
    ids=["oidc-while-off", "oidc-principal-as-key", "no-method", "key-principal-as-oidc"],
)
def test_a_forged_session_naming_oidc_while_oidc_is_off_is_refused(
    stack: Stack, gateway: Gateway, emulator: Emulator, waiting: str, document: dict[str, object], reason: str
) -> None:
    browser = UiBrowser(stack.api_url)
    claims = {"sid": "forged", "method": "oidc https://idp.example"} | document
    browser.use(forged_session(DEVELOPMENT_UI_SESSION_SECRET, **claims))

    assert reason in sent_to_sign_in(browser.http.get("/ui/"))
    sent_to_sign_in(browser.http.get(f"/ui/pipelines/{waiting}"))
    sent_to_sign_in(browser.cancel(waiting, "forged-csrf"))
    assert_unchanged(gateway, emulator, waiting)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda cookie: cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"),  # the signature
        lambda cookie: "eyJzaWQiOiJ4In0" + cookie[cookie.index(".") :],  # another payload, same signature
        lambda cookie: cookie.rsplit(".", 1)[0],  # no signature
        lambda cookie: cookie + "." + cookie,
        lambda cookie: "",
        lambda cookie: "not-a-session",
        lambda cookie: "%00%ED%A0%80." + cookie.split(".", 1)[1],  # a NUL and a lone surrogate, percent-encoded
    ],
    ids=["signature", "payload", "unsigned", "doubled", "empty", "garbage", "nul-and-surrogate"],
)
def test_a_tampered_session_cookie_is_refused(
    stack: Stack, gateway: Gateway, emulator: Emulator, waiting: str, tamper: object
) -> None:
    browser = UiBrowser(stack.api_url)
    browser.sign_in()
    cookie = tamper(browser.http.cookies[SESSION_COOKIE])  # type: ignore[operator]
    browser.http.cookies.clear()
    browser.http.headers["cookie"] = f"{SESSION_COOKIE}={cookie}"

    sent_to_sign_in(browser.http.get(f"/ui/pipelines/{waiting}"))
    sent_to_sign_in(browser.cancel(waiting))
    assert_unchanged(gateway, emulator, waiting)


def test_a_cancel_from_the_page_records_who_cancelled(stack: Stack, gateway: Gateway, waiting: str) -> None:
    browser = UiBrowser(stack.api_url)
    browser.sign_in()

    response = browser.cancel(waiting)

    assert (response.status_code, response.headers["location"]) == (303, f"/ui/pipelines/{waiting}?done=cancel")
    timeline = gateway.wait_for_timeline(waiting, "cancelled")
    [cancel] = [event for event in timeline["events"] if event["kind"] == "cancel_requested"]
    assert cancel["data"]["by"] == "key:dev", cancel
