"""Authenticating the notebook's callback before anything reads it.

The signing key is per callback promise, so the promise id must be read from
the body before the signature can be checked; nothing else in the body is
trusted, or even validated, until the signature holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import ValidationError

from pipeline_shared.errors import CallbackUnauthorized, InvalidCallback
from pipeline_shared.signing import CallbackSignatureError, derive_callback_key, verify_callback

from .schemas import CallbackRequest


def authenticate_callback(body: bytes, headers: Mapping[str, str], secret: str) -> CallbackRequest:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCallback(f"the callback body is not JSON: {exc}") from exc
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
