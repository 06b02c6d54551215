"""Signed callbacks: how the notebook proves it speaks for one pipeline.

The scheme is Standard Webhooks (``webhook-id``, ``webhook-timestamp`` and
``webhook-signature`` over ``id.timestamp.body``, HMAC-SHA256), implemented by
the ``standardwebhooks`` library. The notebook signs with the standard library
alone, because a Databricks workspace may not have our packages; the tests
hold both implementations to the same bytes.

Keys are derived, never stored: the server-side secret is known to the worker
and the gateway only, and the notebook receives the key for its own callback
promise. A leaked key can therefore settle one pipeline, and no other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

#: Domain separation for derived keys, so the secret is never used directly to
#: sign anything else a future feature might sign.
_KEY_CONTEXT = b"pipeline-callback-key/v1:"

#: The prefix Standard Webhooks uses for a base64 signing secret.
KEY_PREFIX = "whsec_"


class CallbackSignatureError(Exception):
    """The callback's signature headers are missing, malformed, expired or wrong."""


def derive_callback_key(secret: str, promise_id: str) -> str:
    """The signing key for one callback promise, as a ``whsec_`` secret."""
    digest = hmac.new(secret.encode(), _KEY_CONTEXT + promise_id.encode(), hashlib.sha256).digest()
    return KEY_PREFIX + base64.b64encode(digest).decode()


def sign_callback(key: str, body: bytes, *, msg_id: str | None = None, at: datetime | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, signed with ``key``."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    signature = Webhook(key).sign(msg_id=msg_id, timestamp=at, data=body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def verify_callback(key: str, body: bytes, headers: dict[str, str]) -> None:
    """Check ``body`` against its signature headers, or raise CallbackSignatureError.

    The library allows five minutes of clock skew either way. It raises more
    than its own error on malformed input (a signature without a version,
    invalid base64, a body that is not UTF-8), so all of them are mapped to the
    one error callers handle.
    """
    try:
        Webhook(key).verify(body, headers, json_parse=False)
    except WebhookVerificationError as exc:
        raise CallbackSignatureError(str(exc)) from exc
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise CallbackSignatureError(f"malformed signature headers: {exc}") from exc
