"""Only those who should, on the compose stack: hostile clients, owners, revocation, the public listener, the logs.

The test stack's gateway reads a keys file (tests/support/stack.py, ``TestKeys``)
listing the development key and a few principals more. Every refused request
is checked for what it must not do: change a pipeline, start a Databricks
run, or say anything about a pipeline that is not the caller's.

JSON Web Tokens are refused here without an identity provider configured on
the stack: what the gateway checks in a token (signature, expiry, audience,
issuer, key id, ``alg=none``) is shown in process against an issuer the tests
run on loopback (tests/api/auth/test_authenticator.py).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pipeline_shared.settings import DEVELOPMENT_SIGNING_SECRET
from tests.support.stack import DEVELOPMENT_SUPERUSER_PASSWORD, Stack
from tests.support.stack_clients import Emulator, Gateway, UiBrowser, new_id


def _jwt(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"not-a-signature") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join([part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)])


NOW = int(time.time())
CLAIMS = {"iss": "https://idp.example", "aud": "pipelines", "sub": "mallory", "iat": NOW, "exp": NOW + 600}

#: Authorization headers that must get 401, by probe class.
HOSTILE: dict[str, dict[str, str]] = {
    "no-credentials": {},
    "garbage": {"authorization": "Bearer lol-not-a-key"},
    "key-shaped-garbage": {"authorization": "Bearer pl_dev_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
    "wrong-scheme": {"authorization": "Basic ZGV2OmRldg=="},
    "bare-scheme": {"authorization": "Bearer"},
    "expired-jwt": {"authorization": "Bearer " + _jwt({"alg": "RS256", "kid": "k1"}, CLAIMS | {"exp": NOW - 60})},
    "wrong-audience": {"authorization": "Bearer " + _jwt({"alg": "RS256", "kid": "k1"}, CLAIMS | {"aud": "x"})},
    "wrong-issuer": {"authorization": "Bearer " + _jwt({"alg": "RS256", "kid": "k1"}, CLAIMS | {"iss": "https://x"})},
    "alg-none": {"authorization": "Bearer " + _jwt({"alg": "none"}, CLAIMS, b"")},
    "unknown-kid": {"authorization": "Bearer " + _jwt({"alg": "RS256", "kid": "nobody-knows"}, CLAIMS)},
}


def _routes(pipeline_id: str, fresh_id: str) -> dict[str, Callable[[httpx.Client, dict[str, str]], httpx.Response]]:
    body = {"id": fresh_id, "email": "mallory@example.com", "parameters": {}}
    return {
        "start": lambda http, headers: http.post("/pipelines", json=body, headers=headers),
        "status": lambda http, headers: http.get(f"/pipelines/{pipeline_id}", headers=headers),
        "cancel": lambda http, headers: http.post(f"/pipelines/{pipeline_id}/cancel", headers=headers),
        "run": lambda http, headers: http.get("/run", params={"id": pipeline_id}, headers=headers),
    }


def _started_at(stack: Stack, service: str) -> str:
    """The container's id and start time: both stay the same unless it is recreated or restarted."""
    inspected = subprocess.run(
        ["docker", "inspect", "--format", "{{.Id}} {{.State.StartedAt}}", stack.container_name(service)],
        capture_output=True,
        text=True,
        check=True,
    )
    return inspected.stdout.strip()


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def owned(gateway: Gateway, emulator: Emulator) -> str:
    """A waiting pipeline of the development principal, that calls back only when a test lets it."""
    pipeline_id = new_id("owned")
    emulator.plan(pipeline_id, start_delay_seconds=3600)
    assert gateway.start(pipeline_id).status_code == 202
    gateway.wait_for(pipeline_id, "waiting")
    yield pipeline_id
    gateway.http.post(f"/pipelines/{pipeline_id}/cancel")


def test_every_route_refuses_every_hostile_client_and_changes_nothing(
    stack: Stack, gateway: Gateway, emulator: Emulator, owned: str
) -> None:
    before = gateway.status(owned)
    fresh = new_id("never")
    refused: dict[tuple[str, str], tuple[int, str]] = {}
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        for route, call in _routes(owned, fresh).items():
            for probe, headers in HOSTILE.items():
                response = call(http, headers)
                refused[(route, probe)] = (response.status_code, response.json().get("code", ""))
                assert response.headers.get("www-authenticate", "").startswith("Bearer"), (route, probe)
    assert {outcome for outcome in refused.values()} <= {(401, "unauthenticated"), (401, "invalid_token")}, refused
    assert len(refused) == len(HOSTILE) * 4
    # Nothing changed: the owned pipeline is as it was, and nothing was started.
    assert gateway.status(owned) == before
    assert gateway.http.get(f"/pipelines/{fresh}").status_code == 404
    assert emulator.counters(fresh)["run_now_calls"] == 0
    assert emulator.counters(owned)["runs"] == 1


def test_another_principals_pipeline_does_not_exist_for_them(
    stack: Stack, gateway: Gateway, emulator: Emulator, owned: str
) -> None:
    other = _bearer(stack.keys.keys["other"])
    before = gateway.status(owned)
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        unknown = http.get(f"/pipelines/{new_id('nobody')}", headers=other)
        seen = http.get(f"/pipelines/{owned}", headers=other)
        cancelled = http.post(f"/pipelines/{owned}/cancel", headers=other)
        legacy = http.get("/run", params={"id": owned}, headers=other)
        # The same start as the owner's, and a different one: neither says whose id it is or what it holds.
        same = http.post(
            "/pipelines", json={"id": owned, "email": f"{owned}@example.com", "parameters": {}}, headers=other
        )
        different = http.post("/pipelines", json={"id": owned, "email": "x@example.com"}, headers=other)
        admin = http.get(f"/pipelines/{owned}", headers=_bearer(stack.keys.keys["admin"]))
        reader = http.post(f"/pipelines/{owned}/cancel", headers=_bearer(stack.keys.keys["reader"]))

    for response in (unknown, seen, cancelled, legacy):
        assert (response.status_code, response.json()["code"]) == (404, "pipeline_not_found"), response.text
    assert (same.status_code, same.json()["code"]) == (409, "pipeline_conflict")
    assert same.json() == different.json()
    assert owned + "@example.com" not in same.text
    assert (admin.status_code, admin.json()["id"]) == (200, owned)
    assert (reader.status_code, reader.json()["code"]) == (403, "insufficient_scope")
    assert gateway.status(owned) == before
    assert emulator.counters(owned)["runs"] == 1


def test_a_revoked_key_is_refused_without_a_restart(stack: Stack, gateway: Gateway) -> None:
    revoked = _bearer(stack.keys.keys["revoked"])
    pipeline_id = new_id("revoked")
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        body = {"id": pipeline_id, "email": f"{pipeline_id}@example.com", "parameters": {}}
        assert http.post("/pipelines", json=body, headers=revoked).status_code == 202
        api_started = _started_at(stack, "api")
        try:
            stack.keys.write(without=("revoked",))
            deadline = time.monotonic() + 15
            while (status := http.get(f"/pipelines/{pipeline_id}", headers=revoked).status_code) != 401:
                assert time.monotonic() < deadline, f"the revoked key still answered {status} after 15 s"
                time.sleep(0.25)
            assert http.post(f"/pipelines/{pipeline_id}/cancel", headers=revoked).json()["code"] == "invalid_token"
        finally:
            stack.keys.write()
    # The gateway was not restarted, its other keys kept working, and the
    # revoked principal's pipeline runs on (an admin can see it).
    assert _started_at(stack, "api") == api_started
    admin = Gateway(stack.api_url)
    admin.http.headers["authorization"] = f"Bearer {stack.keys.keys['admin']}"
    assert admin.wait_for(pipeline_id, "succeeded")["id"] == pipeline_id


def test_the_public_listener_answers_only_the_callback(stack: Stack, gateway: Gateway, emulator: Emulator) -> None:
    pipeline_id = new_id("public")
    emulator.plan(pipeline_id, notebook="drop_callback", start_delay_seconds=3600)
    assert gateway.start(pipeline_id).status_code == 202
    gateway.wait_for(pipeline_id, "waiting")
    with httpx.Client(base_url=stack.callback_url, timeout=30) as public:
        for method, path in [
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
            ("GET", "/metrics"),
            ("GET", "/healthz"),
            ("GET", f"/pipelines/{pipeline_id}"),
            ("POST", "/pipelines"),
            ("POST", f"/pipelines/{pipeline_id}/cancel"),
            ("GET", "/run"),
            ("GET", "/ui"),
        ]:
            response = public.request(method, path, headers=_bearer(stack.keys.keys["admin"]))
            assert response.status_code == 404 and response.json()["code"] == "not_found", (method, path, response.text)
        body, headers = gateway.signed_callback(pipeline_id, {"status": "success", "result": {"rows": 1}})
        settled = public.post("/callbacks/databricks", content=body, headers=headers)
    assert settled.status_code == 200 and settled.json()["outcome"] == "accepted", settled.text
    assert gateway.wait_for(pipeline_id, "succeeded")["result"] == {"rows": 1}


def _send_a_key_everywhere(stack: Stack, key: str) -> None:
    """``key`` in every place a client may put one, on both listeners and the page; none of it may be logged."""
    with (
        httpx.Client(base_url=stack.api_url, timeout=30) as api,
        httpx.Client(base_url=stack.callback_url, timeout=30) as public,
    ):
        for http in (api, public):
            for name in ("access_token", "api_key", "token", "key"):
                http.get("/pipelines", params={name: key})
                http.post("/callbacks/databricks", params={name: key}, json={"promise_id": "p:1", "status": "success"})
            http.get("/pipelines", headers=_bearer(key) | {"x-api-key": key, "x-auth-token": key})
            http.post("/callbacks/databricks", json={"promise_id": "p:1", "status": "success", "token": key})
            http.get("/pipelines", headers={"cookie": f"pipelines_ui_session={key}; api_key={key}"})
            http.post("/callbacks/databricks", content=f"credential={key}&api_key={key}".encode())
        # A JSON body field (a start the gateway refuses: the email is the key), a form field, a cookie.
        api.post("/pipelines", json={"email": key, "api_key": key, "parameters": {"token": key}}, headers=_bearer(key))
        api.get("/ui/", params={"access_token": key}, headers={"cookie": f"pipelines_ui_session={key}"})
        api.post("/ui/sign-in", data={"credential": key, "sign_in_token": "not-the-forms"})
        browser = UiBrowser(stack.api_url)
        browser.sign_in(key)
        browser.http.get("/ui/", params={"api_key": key})
        browser.http.post("/ui/start", data={"csrf_token": browser.csrf, "email": key, "param.source": key})
        browser.http.post("/ui/sign-out", data={"csrf_token": browser.csrf})


def test_no_secret_reaches_a_log_line(stack: Stack) -> None:
    # Runs after the probes above (same module, in order): they sent every key
    # and token to the gateway, refused and accepted; here a real key goes
    # everywhere else a client may put one.
    _send_a_key_everywhere(stack, stack.keys.keys["other"])
    time.sleep(1)  # the containers' last lines reach the log
    logs = stack.logs()
    secrets = {f"API key {name}": key for name, key in stack.keys.keys.items()}
    secrets |= {
        f"probe {name}": h["authorization"].split(" ", 1)[1]
        for name, h in HOSTILE.items()
        if h.get("authorization", "").startswith("Bearer ") and len(h["authorization"]) > 20
    }
    secrets |= {
        "callback signing secret": DEVELOPMENT_SIGNING_SECRET,
        "database superuser password": DEVELOPMENT_SUPERUSER_PASSWORD,
        **{f"{s} database password": f"dev-only-insecure-{s}-db-password" for s in ("api", "worker", "notifier")},
    }
    leaked = [what for what, value in secrets.items() if value in logs]
    assert not leaked, f"found in the stack's logs: {leaked}"
    assert '"msg": "request refused"' in logs  # the audit lines are there
