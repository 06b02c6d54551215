"""Turn a Databricks notebook into a pipeline: run your code, report its outcome, signed.

Usage: the last cell of your notebook is a ``with`` block around your own code::

    from pipeline_callback import pipeline_run

    with pipeline_run(dbutils) as run:
        run.result = {"words": top_words(run.parameters["text"])}

- ``run.parameters`` is a dict of the job's parameters for this run (strings),
  without the pipeline's own inputs (``pipeline_id``, ``callback_promise_id``,
  ``callback_url``, ``callback_signing_key``). Pass ``defaults={"text": ""}``
  to declare your parameters as widgets too, so a run by hand shows them.
- ``run.pipeline_id`` names the pipeline this run belongs to ("" by hand).
- Set ``run.result`` to a JSON object (a dict; None counts as ``{}``).

When the block ends normally, the result is posted to the pipeline service as a
success and the notebook ends with ``dbutils.notebook.exit`` of the result as
JSON: the exit value is how the service reads the outcome if the callback is
lost. When the block raises, the error's type and message are posted as a
failure and the exception goes on up, so Databricks marks the run failed. So
the block belongs in the notebook's last cell, and your code inside it should
not call ``dbutils.notebook.exit`` itself.

Run by hand (no ``callback_url``), nothing is posted and the exit value is the
same. The pipeline's inputs are checked before your code runs, because without
them no outcome could be reported. The callback never changes the notebook's
own outcome: a refused or undeliverable callback is printed, and a failing
notebook still fails while a succeeding one still exits with its result.

The callback is a ``POST`` of ``{"promise_id", "status": "success", "result"}``
or ``{"promise_id", "status": "failure", "error": {"type", "message"}}``,
signed with Standard Webhooks headers (HMAC-SHA256 over ``id.timestamp.body``)
using the ``whsec_`` key this run was given, which is valid for this pipeline
only. It is retried with jittered backoff on connection errors, 5xx and 429
for at most 5 minutes, never on other 4xx: those answers do not change.

This module is imported by notebooks, next to which the bundle syncs it, so it
uses the Python standard library only: it must run on any compute as it is.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import NamedTuple

#: The job parameters the pipeline service sets on every run, with their widget labels. They
#: are the helper's, not the notebook's, so ``run.parameters`` leaves them out.
PIPELINE_INPUTS = {
    "pipeline_id": "Pipeline id",
    "callback_promise_id": "Callback promise id",
    "callback_url": "Callback URL",
    "callback_signing_key": "Callback signing key",
}
#: The prefix of a Standard Webhooks signing secret; the rest is the key in base64.
KEY_PREFIX = "whsec_"
#: Error types and messages are cut to what the service accepts.
MAX_ERROR_TYPE_CHARS = 200
MAX_ERROR_MESSAGE_CHARS = 20_000


class PipelineResultError(ValueError):
    """``run.result`` cannot be reported: it is not a JSON object the service could store."""


@dataclasses.dataclass(frozen=True)
class Retry:
    """How long and how often a callback is tried."""

    #: Give up this long after the first attempt; the service then learns the outcome from
    #: the run itself (its state and exit value).
    deadline_seconds: float = 300
    #: One attempt may take this long before it counts as a connection error.
    attempt_timeout_seconds: float = 10
    #: Backoff between attempts: doubles from the first value up to the cap, with jitter.
    first_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30


#: The retry policy of every callback, unless a test asks for a faster one.
DEFAULT_RETRY = Retry()


class Delivery(NamedTuple):
    """How a callback ended: the last HTTP status (None: never reached) after ``attempts``."""

    status: int | None
    attempts: int


def signing_key_bytes(key: str) -> bytes:
    """The raw HMAC key inside a `whsec_` secret; ValueError naming the widget if malformed."""
    if not key.startswith(KEY_PREFIX):
        raise ValueError("widget 'callback_signing_key' must start with 'whsec_'")
    try:
        return base64.b64decode(key[len(KEY_PREFIX) :], validate=True)
    except ValueError as exc:
        raise ValueError(f"widget 'callback_signing_key' is not valid base64 after 'whsec_': {exc}") from None


def signature_headers(key: str, body: bytes, msg_id: str, timestamp: int) -> dict[str, str]:
    """Standard Webhooks headers: HMAC-SHA256 over `id.timestamp.body`, as `v1,<base64>`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key_bytes(key), signed, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def is_retryable(status: int) -> bool:
    """Whether an HTTP status may change on retry: server errors and rate limiting may."""
    return status >= 500 or status == 429


def post_callback(url: str, key: str, payload: dict, retry: Retry = DEFAULT_RETRY) -> Delivery:
    """POST the signed payload until the service accepts or refuses it, or the deadline passes.

    All attempts share one `webhook-id`, so the service can tell a retry from a new message;
    each is signed afresh with the current time, because the service refuses stale timestamps.
    """
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    msg_id = f"msg_{uuid.uuid4().hex}"
    give_up_at = time.monotonic() + retry.deadline_seconds
    backoff = retry.first_backoff_seconds
    attempt = 0
    while True:
        attempt += 1
        headers = signature_headers(key, body, msg_id, int(time.time()))
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=retry.attempt_timeout_seconds) as response:
                status, detail = response.status, ""
        except urllib.error.HTTPError as exc:
            status, detail = exc.code, exc.read(500).decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            status, detail = None, str(getattr(exc, "reason", exc))
        outcome = status if status is not None else "unreachable"
        print(f"callback attempt {attempt}: {outcome} {detail}".rstrip())
        if status is not None and not is_retryable(status):
            return Delivery(status, attempt)
        sleep = min(backoff, retry.max_backoff_seconds) * random.uniform(0.5, 1.0)
        if time.monotonic() + sleep >= give_up_at:
            return Delivery(status, attempt)
        time.sleep(sleep)
        backoff *= 2


def success_payload(promise_id: str, result: dict) -> dict:
    """The callback body that reports a result."""
    return {"promise_id": promise_id, "status": "success", "result": result}


def failure_payload(promise_id: str, error: BaseException) -> dict:
    """The callback body that reports an exception."""
    return {
        "promise_id": promise_id,
        "status": "failure",
        "error": {
            "type": type(error).__name__[:MAX_ERROR_TYPE_CHARS],
            "message": str(error)[:MAX_ERROR_MESSAGE_CHARS],
        },
    }


def result_json(result: object) -> str:
    """``run.result`` as the JSON text of the exit value; PipelineResultError if it has none."""
    result = {} if result is None else result
    if not isinstance(result, dict):
        raise PipelineResultError(f"run.result must be a JSON object (a dict), not {type(result).__name__}")
    try:
        return json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PipelineResultError(
            f"run.result is not JSON: {exc}. Use dicts, lists, strings, finite numbers, booleans and None."
        ) from None


class PipelineRun:
    """One run of a pipeline notebook: its inputs, and the outcome it reports when the block ends.

    Made by :func:`pipeline_run`, which has already checked the inputs.
    """

    def __init__(self, dbutils: object, inputs: dict[str, str], parameters: dict[str, str], retry: Retry) -> None:
        self.pipeline_id = inputs["pipeline_id"]
        #: The job's parameters for this run, other than the pipeline's own inputs.
        self.parameters = parameters
        #: What the notebook reports on success: a JSON object; None counts as {}.
        self.result: dict | None = None
        self._dbutils = dbutils
        self._promise_id = inputs["callback_promise_id"]
        self._callback_url = inputs["callback_url"]
        self._signing_key = inputs["callback_signing_key"]
        self._retry = retry

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(self, error_type: type | None, error: BaseException | None, traceback: object) -> bool:
        # Only errors of the notebook's code are its outcome; a BaseException (the run
        # cancelled, the interpreter stopping) ends the run with nothing to report.
        if isinstance(error, Exception):
            self._report(failure_payload(self._promise_id, error))
            return False
        if error is not None:
            return False
        try:
            exit_value = result_json(self.result)
        except PipelineResultError as invalid:
            self._report(failure_payload(self._promise_id, invalid))
            raise
        self._report(success_payload(self._promise_id, json.loads(exit_value)))
        self._dbutils.notebook.exit(exit_value)
        return False

    def _report(self, payload: dict) -> None:
        """Post the outcome, and print how it went; never raises, so the outcome stays the notebook's."""
        if not self._callback_url:
            print(f"{payload['status']}: not reported (no callback_url: run by hand)")
            return
        try:
            status, attempts = post_callback(self._callback_url, self._signing_key, payload, self._retry)
        except Exception as exc:  # an outcome the helper cannot post must not replace the notebook's
            print(f"{payload['status']}: callback not sent: {type(exc).__name__}: {exc}")
            return
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if status is None or is_retryable(status):
            last = "no answer" if status is None else f"last answer HTTP {status}"
            print(
                f"{payload['status']} callback not delivered after {tries} ({last}): "
                "the service will read this run's outcome instead"
            )
        elif status < 300:
            print(f"{payload['status']} callback accepted: HTTP {status} after {tries}")
        else:
            print(
                f"{payload['status']} callback refused: HTTP {status} after {tries}; "
                "the run still ends with its own outcome"
            )


def pipeline_run(
    dbutils: object,
    *,
    defaults: dict[str, str] | None = None,
    retry: Retry = DEFAULT_RETRY,
) -> PipelineRun:
    """Read and check this run's inputs; use the answer as a ``with`` block around your code.

    ``defaults``: your parameters and the values they take when a run gives none. They are
    declared as text widgets, as the pipeline's inputs are, so a run by hand shows them;
    where ``dbutils.widgets`` has no ``getAll`` (older runtimes) they are the names read.
    """
    widgets = dbutils.widgets
    declared = {name: "" for name in PIPELINE_INPUTS} | dict(defaults or {})
    for name, default in declared.items():
        widgets.text(name, default, PIPELINE_INPUTS.get(name, name))
    get_all = getattr(widgets, "getAll", None)
    values = dict(get_all()) if callable(get_all) else {name: widgets.get(name) for name in declared}
    inputs = {name: str(values.get(name, "")) for name in PIPELINE_INPUTS}
    inputs["callback_url"] = inputs["callback_url"].strip()
    if inputs["callback_url"]:
        # Checked before any work: without these no outcome could be reported.
        if urllib.parse.urlsplit(inputs["callback_url"]).scheme not in ("http", "https"):
            raise ValueError(f"widget 'callback_url' must be an http(s) URL, not {inputs['callback_url']!r}")
        signing_key_bytes(inputs["callback_signing_key"])
        if not inputs["callback_promise_id"]:
            raise ValueError("widget 'callback_promise_id' is required when 'callback_url' is set")
    print(f"pipeline {inputs['pipeline_id'] or '(none)'}; callback {inputs['callback_url'] or '(none: run by hand)'}")
    parameters = {name: str(value) for name, value in values.items() if name not in PIPELINE_INPUTS}
    return PipelineRun(dbutils, inputs, parameters, retry)
