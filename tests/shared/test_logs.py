"""The JSON log lines: what they carry, and that no credential reaches one, whoever logs it."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from pipeline_shared.logs import REDACTED, JsonFormatter

KEY = "pl_alice_0123456789abcdefghijABCDEFGHIJ_-xyz"
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJlLW5vdC1yZWFs"
SESSION = "eyJzaWQiOiJhYmMiLCJraW5kIjoia2V5In0.aTM0xQ.Zm9yZ2VkLXNpZ25hdHVyZQ"


def line(message: str, *args: object, logger: str = "pipeline_api", exc: bool = False, **fields: object) -> str:
    record = logging.LogRecord(logger, logging.INFO, __file__, 1, message, args or None, None)
    if fields:
        record.fields = fields
    if exc:
        try:
            raise ValueError(message % args if args else message)
        except ValueError:
            record.exc_info = sys.exc_info()
    return JsonFormatter("api").format(record)


@pytest.mark.parametrize(
    ("where", "text"),
    [
        (
            "access line, ?access_token=",
            ('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/pipelines?access_token={KEY}", "1.1", 401),
        ),
        (
            "access line, ?api_key=",
            ('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/ui/?x=1&api_key={KEY}", "1.1", 303),
        ),
        ("access line, JWT in ?token=", ('"GET %s"', f"/pipelines?token={JWT}")),
        ("Authorization header", ("headers: %s", {"authorization": f"Bearer {KEY}"})),
        ("Authorization header, JWT", ("headers: %s", {"authorization": f"Bearer {JWT}"})),
        ("custom header", ("headers: %s", {"x-api-key": KEY})),
        ("JSON body field", ("body: %s", json.dumps({"email": "a@example.com", "api_key": KEY}))),
        ("form field", ("body: %s", f"credential={KEY}&sign_in_token=abc&next=%2Fui%2F")),
        ("session cookie", ("cookie: %s", f"pipelines_ui_session={SESSION}; theme=dark")),
        ("a key anywhere in a traceback", ("could not parse %r", KEY)),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_no_credential_survives_a_log_line_wherever_a_client_put_it(where: str, text: tuple[object, ...]) -> None:
    message, *args = text
    written = line(str(message), *args, exc=where.endswith("traceback"))

    for secret in (KEY, KEY.split("_", 2)[2], JWT, SESSION, JWT.split(".")[1], SESSION.split(".")[2]):
        assert secret not in written, where
    assert REDACTED in written
    json.loads(written)  # still one JSON object


def test_what_is_not_a_credential_stays_as_it_was() -> None:
    said = [
        "the Authorization header must use the Bearer scheme: 'Authorization: Bearer <API key or OIDC token>'",
        "the token has expired",
        "pipeline csv-1 cancelled by key:alice",
    ]
    for message in said:
        assert json.loads(line(message))["msg"] == message
    audit = json.loads(line("request refused", principal="key:alice", key_id="alice", path="/pipelines"))
    assert (audit["principal"], audit["key_id"]) == ("key:alice", "alice")
    assert json.loads(line("got %s", f"X-API-Key: {KEY}"))["msg"] == f"got X-API-Key: pl_alice_{REDACTED}"
