"""Authenticating the notebook's callback before anything reads it.

The signing key is per callback promise, so the promise id must be read from
the body before the signature can be checked; nothing else in the body is
trusted, or even validated, until the signature holds.

Rotating the signing secret
---------------------------
The worker derives each pipeline's key from ``CALLBACK_SIGNING_SECRET`` when
it triggers the run and hands it to the notebook, which signs with it until
it ends. A rotation must therefore keep accepting keys derived from the old
secret for as long as a pipeline started before it can call back:

1. Make a new secret (``openssl rand -base64 48``).
2. Gateway first: ``CALLBACK_SIGNING_SECRET=<new>`` and
   ``CALLBACK_SIGNING_PREVIOUS_SECRETS=<old>`` (comma-separated if several),
   then restart it. It now accepts keys derived from either.
3. Then the worker: ``CALLBACK_SIGNING_SECRET=<new>``, restart. Pipelines it
   triggers from now on get keys derived from the new secret. (In the other
   order, a run triggered in between would hold a key the gateway does not
   know yet.)
4. Once every pipeline triggered before step 3 has finished (at most its
   ``timeout_seconds``, 6 h by default and 30 days at the most, plus the
   notebook's 5 minutes of retries), remove the old secret from
   ``CALLBACK_SIGNING_PREVIOUS_SECRETS`` and restart the gateway. From then
   on a callback signed with a key derived from it gets 401.

After a leak, skip the wait: remove the old secret at once. Callbacks of
pipelines started before the rotation are then refused, and the watchdog
settles those pipelines from their Databricks runs instead (within
``WATCHDOG_INTERVAL_SECONDS``), so none waits until it times out.

Standard Webhooks lets a sender put several space-separated signatures in
``webhook-signature``; a callback is accepted when any of them verifies under
a key derived from the current or any listed previous secret.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from pipeline_shared.errors import CallbackUnauthorized, InvalidCallback
from pipeline_shared.signing import CallbackSignatureError, derive_callback_key, verify_callback

from ..schemas import CallbackRequest

#: Where the notebook sends its signed callback (on both listeners).
CALLBACK_PATH = "/callbacks/databricks"

#: A JSON escape of a UTF-16 surrogate: the only way parsed text can fail to encode.
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} does not fit a double-precision number")
    return value


def _parse(body: bytes) -> object:
    """Strict JSON: no NaN or Infinity, no number that overflows, only encodable text.

    What could not be stored exactly must be refused here; the alternative is
    a result that silently changes on its way into Resonate.
    """
    try:
        document = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite)
        if _ESCAPED_SURROGATE.search(body):
            # An escaped lone surrogate parses, but cannot be stored as UTF-8.
            json.dumps(document, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise InvalidCallback(f"the callback body is not valid Unicode text: {exc.reason}") from exc
    except RecursionError as exc:
        raise InvalidCallback("the callback body is nested too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCallback(f"the callback body is not JSON: {exc}") from exc
    return document


def _verify_under_any(secrets: Sequence[str], promise_id: str, body: bytes, headers: dict[str, str]) -> None:
    """Accept the signature if it verifies under a key derived from any of ``secrets``.

    The current secret comes first, so a callback of a pipeline started after
    the last rotation costs one HMAC. The error reported is the current
    secret's: the others fail the same way or only for their key.
    """
    refusal: CallbackSignatureError | None = None
    for secret in secrets:
        try:
            verify_callback(derive_callback_key(secret, promise_id), body, headers)
            return
        except CallbackSignatureError as exc:
            refusal = refusal or exc
    assert refusal is not None, "no signing secret configured"
    raise refusal


def authenticate_callback(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> CallbackRequest:
    """The callback document, once its signature holds under one of ``secrets`` (current first)."""
    document = _parse(body)
    promise_id = document.get("promise_id") if isinstance(document, dict) else None
    if not isinstance(promise_id, str) or not promise_id:
        raise InvalidCallback("the callback body must be a JSON object with a non-empty string promise_id")
    try:
        _verify_under_any(secrets, promise_id, body, dict(headers))
    except CallbackSignatureError as exc:
        raise CallbackUnauthorized(
            f"callback signature rejected: {exc}. Sign the exact body with the key this pipeline's run "
            "received, using the webhook-id, webhook-timestamp and webhook-signature headers."
        ) from exc
    try:
        return CallbackRequest.model_validate(document)
    except ValidationError as exc:
        details = [{"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        first = details[0]
        where = ".".join(first["loc"][1:]) or "body"
        raise InvalidCallback(f"invalid callback: {where}: {first['msg']}", details) from exc
