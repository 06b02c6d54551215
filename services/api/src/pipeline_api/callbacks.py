"""Authenticating the notebook's callback before anything reads it.

The signing key is per callback promise, so the promise id must be read from
the body before the signature can be checked; nothing else in the body is
trusted, or even validated, until the signature holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from pydantic import ValidationError

from pipeline_shared.errors import CallbackUnauthorized, InvalidCallback
from pipeline_shared.signing import CallbackSignatureError, derive_callback_key, verify_callback

from .schemas import CallbackRequest

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


def authenticate_callback(body: bytes, headers: Mapping[str, str], secret: str) -> CallbackRequest:
    document = _parse(body)
    promise_id = document.get("promise_id") if isinstance(document, dict) else None
    if not isinstance(promise_id, str) or not promise_id:
        raise InvalidCallback("the callback body must be a JSON object with a non-empty string promise_id")
    try:
        verify_callback(derive_callback_key(secret, promise_id), body, dict(headers))
    except CallbackSignatureError as exc:
        raise CallbackUnauthorized(
            f"callback signature rejected: {exc}. Sign the exact body with the key this pipeline's run "
            "received, using the webhook-id, webhook-timestamp and webhook-signature headers."
        ) from exc
    try:
        return CallbackRequest.model_validate(document)
    except ValidationError as exc:
        details = [
            {"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        first = details[0]
        where = ".".join(first["loc"][1:]) or "body"
        raise InvalidCallback(f"invalid callback: {where}: {first['msg']}", details) from exc
