"""Every answer of the emulator, held to databricks-sdk's own models of it.

The test suite starts the emulator through this module
(``python -m tests.support.sdk_model_check``), which serves the real
app wrapped in :class:`SdkModelCheck`: an ASGI middleware that reads each
Databricks-facing answer before it leaves and checks it against the SDK's
dataclass for that endpoint. ``Model.from_dict(body).as_dict()`` must give
back exactly what was sent: a field the model does not know is dropped by
``from_dict``, an enum value it does not know becomes None, and either shows
as a difference. Error answers must have the shape the SDK's error parser
reads.

Whatever client a test uses (databricks-sdk, raw HTTP, the worker's own
client), its answers pass through here, so no test can pass on an answer a
real client would misread. A failing answer is replaced by a 500 naming the
difference (so the calling test fails at once) and appended to the log file
named by ``EMULATOR_MODEL_CHECK_LOG`` (so a test that expected an error, and
got a different one, still fails at teardown).

It lives in the tests because it is a check on the emulator, not part of it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from databricks.sdk.oauth import HostMetadata, OidcEndpoints
from databricks.sdk.service.jobs import (
    Job,
    ListJobsResponse,
    ListRunsResponse,
    RepairRunResponse,
    Run,
    RunNowResponse,
    RunOutput,
)

#: Where the middleware appends one JSON line per answer that fails the check.
LOG_ENV = "EMULATOR_MODEL_CHECK_LOG"

_JOBS_PATH = re.compile(r"^/api/2\.\d/(?P<endpoint>jobs/.+)$")
#: The SDK dataclass each modelled Jobs endpoint's answer is read into.
JOBS_MODELS: dict[tuple[str, str], type] = {
    ("POST", "jobs/run-now"): RunNowResponse,
    ("POST", "jobs/runs/repair"): RepairRunResponse,
    ("GET", "jobs/runs/get"): Run,
    ("GET", "jobs/runs/get-output"): RunOutput,
    ("GET", "jobs/get"): Job,
    ("GET", "jobs/list"): ListJobsResponse,
    ("GET", "jobs/runs/list"): ListRunsResponse,
}
#: The keys databricks-sdk's error parser reads from an API error.
API_ERROR_KEYS = {"error_code", "message", "details"}
#: What the SDK's ``retrieve_token`` reads from a token answer, and ``scope``,
#: which a workspace also sends.
TOKEN_KEYS = {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
OAUTH_ERROR_KEYS = {"error", "error_description"}


def differences(sent: Any, kept: Any, where: str = "") -> list[str]:
    """Where ``kept`` (the round trip) differs from ``sent`` (the answer), as readable paths."""
    if isinstance(sent, dict) and isinstance(kept, dict):
        found = [f"{where}.{key}: not in the SDK model" for key in sent if key not in kept]
        found += [f"{where}.{key}: added by the SDK model" for key in kept if key not in sent]
        for key in sent.keys() & kept.keys():
            found += differences(sent[key], kept[key], f"{where}.{key}")
        return found
    if isinstance(sent, list) and isinstance(kept, list) and len(sent) == len(kept):
        return [
            problem
            for index, (one, other) in enumerate(zip(sent, kept, strict=True))
            for problem in differences(one, other, f"{where}[{index}]")
        ]
    if type(sent) is not type(kept) or sent != kept:
        return [f"{where or '.'}: sent {sent!r}, the SDK model reads {kept!r}"]
    return []


def _round_trip(model: type, body: Any) -> list[str]:
    if not isinstance(body, dict):
        return [f"the answer is not a JSON object: {body!r}"]
    kept = model.from_dict(body).as_dict()
    # HostMetadata and OidcEndpoints write every attribute, None for the unset.
    kept = {key: value for key, value in kept.items() if value is not None}
    return differences(body, kept)


def _only_keys(body: Any, allowed: set[str], required: set[str]) -> list[str]:
    if not isinstance(body, dict):
        return [f"the answer is not a JSON object: {body!r}"]
    problems = [f".{key}: not read by any client" for key in sorted(body.keys() - allowed)]
    problems += [f".{key}: missing" for key in sorted(required - body.keys())]
    return problems


def check_answer(method: str, path: str, status: int, body: Any) -> list[str]:
    """What is wrong with this answer, as databricks-sdk would read it ([] when nothing)."""
    jobs = _JOBS_PATH.match(path)
    if jobs:
        if status >= 400:
            problems = _only_keys(body, API_ERROR_KEYS, {"error_code", "message"})
            if isinstance(body, dict) and not isinstance(body.get("message"), str):
                problems.append(".message: not a string")
            return problems
        endpoint = jobs["endpoint"]
        if (method, endpoint) == ("POST", "jobs/runs/cancel"):
            return [] if body == {} else [f"runs/cancel answers {{}}, not {body!r}"]
        model = JOBS_MODELS.get((method, endpoint))
        return _round_trip(model, body) if model else [f"no SDK model for {method} {endpoint}"]
    if path == "/.well-known/databricks-config":
        return _round_trip(HostMetadata, body)
    if path == "/oidc/.well-known/oauth-authorization-server":
        return _round_trip(OidcEndpoints, body)
    if path == "/oidc/v1/token":
        if status >= 400:
            return _only_keys(body, OAUTH_ERROR_KEYS, OAUTH_ERROR_KEYS)
        problems = _only_keys(body, TOKEN_KEYS, {"access_token", "token_type", "expires_in"})
        if isinstance(body, dict) and not isinstance(body.get("expires_in"), int):
            problems.append(".expires_in: not an integer number of seconds")
        return problems
    return []


def is_checked(path: str) -> bool:
    return path.startswith(("/api/", "/oidc/", "/.well-known/"))


@dataclass
class _Answer:
    start: dict[str, Any] | None = None
    body: bytes = b""


class SdkModelCheck:
    """ASGI middleware: every Databricks-facing answer must read back unchanged through the SDK."""

    def __init__(self, app: Any, log_path: Path) -> None:
        self.app = app
        self.log_path = log_path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not is_checked(scope["path"]):
            await self.app(scope, receive, send)
            return
        answer = _Answer()

        async def hold(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer.start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            answer.body += message.get("body", b"")
            if message.get("more_body"):
                return
            start, body = self._checked(scope, answer.start or {}, answer.body)
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, hold)

    def _checked(self, scope: dict[str, Any], start: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
        status = start.get("status", 500)
        try:
            body = json.loads(raw)
        except ValueError:
            problems = [f"the answer is not JSON: {raw[:200]!r}"]
        else:
            problems = check_answer(scope["method"], scope["path"], status, body)
        if not problems:
            return start, raw
        record = {"method": scope["method"], "path": scope["path"], "status": status, "problems": problems}
        with self.log_path.open("a") as log:
            log.write(json.dumps(record) + "\n")
        replaced = json.dumps(
            {
                "error_code": "EMULATOR_ANSWER_OUTSIDE_SDK_MODEL",
                "message": f"{scope['method']} {scope['path']} answered {status} with: {'; '.join(problems)}",
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(replaced)).encode())]
        return {"type": "http.response.start", "status": 500, "headers": headers}, replaced


def problems_logged(log_path: Path, after: int = 0) -> list[dict[str, Any]]:
    """The failed answers recorded in ``log_path``, from line ``after`` on."""
    if not log_path.exists():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines()[after:]]


if __name__ == "__main__":
    from databricks_emulator.__main__ import main

    log = Path(os.environ[LOG_ENV])
    sys.exit(main(wrap=lambda app: SdkModelCheck(app, log)))
