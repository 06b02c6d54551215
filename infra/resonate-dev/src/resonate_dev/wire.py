"""Bytes to request envelopes and flat responses to bytes, as the server frames them.

The model speaks flat dictionaries; the wire speaks ``{kind, head, data}``
envelopes. The SDK's ``unwrap_request_envelope`` / ``wrap_response_envelope``
do the conversion, and this module builds on them with what they leave out:
the envelope checks the real server makes before a request reaches its state
(``handle_api`` in resonatehq/resonate ``src/server.rs``), and the response
shape it sends back -- an error's ``data`` is the message string, not an
object, and a successful ``data`` is always an object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from resonate.connections.local import unwrap_request_envelope, wrap_response_envelope

from resonate_dev.protocol import PROTOCOL_VERSION, SUPPORTED_VERSIONS

#: What a request names when its envelope is too broken to name anything, as
#: the server's ``extract_error_context`` falls back.
UNKNOWN_KIND = "unknown"
UNKNOWN_CORR_ID = "0"

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Request:
    """A request envelope that passed the envelope checks."""

    kind: str
    corr_id: str
    auth: str | None
    data: dict[str, Any]
    envelope: dict[str, Any]

    def flat(self) -> dict[str, Any]:
        """The flat form the model applies: ``data`` fields plus ``kind`` and ``corrId``."""
        return unwrap_request_envelope(self.envelope)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A request refused before reaching the model, with the response to send."""

    response: dict[str, Any]


def parse_request(body: bytes) -> Request | Rejected:
    """Check an envelope the way the server does before dispatching it."""
    try:
        raw = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        return Rejected(
            error_response(UNKNOWN_KIND, UNKNOWN_CORR_ID, 400, f"Invalid request envelope: {exc}")
        )
    kind, corr_id = _salvage(raw)
    if not isinstance(raw, dict):
        return Rejected(
            error_response(kind, corr_id, 400, "Invalid request envelope: expected an object")
        )
    head = raw.get("head")
    missing = [
        name
        for name, ok in (
            ("kind", isinstance(raw.get("kind"), str)),
            ("head", isinstance(head, dict)),
            ("head.corrId", isinstance(head, dict) and isinstance(head.get("corrId"), str)),
            ("head.version", isinstance(head, dict) and isinstance(head.get("version"), str)),
            ("data", "data" in raw),
        )
        if not ok
    ]
    if missing:
        message = f"Invalid request envelope: missing or mistyped {', '.join(missing)}"
        return Rejected(error_response(kind, corr_id, 400, message))
    assert isinstance(head, dict)
    auth = head.get("auth")
    if auth is not None and not isinstance(auth, str):
        return Rejected(
            error_response(
                kind, corr_id, 400, "Invalid request envelope: head.auth must be a string"
            )
        )
    if raw["kind"] == "":
        return Rejected(
            error_response(
                kind, corr_id, 400, "Missing or invalid 'kind' field — must be a non-empty string"
            )
        )
    data = raw["data"]
    if not isinstance(data, dict):
        return Rejected(
            error_response(kind, corr_id, 400, "Invalid 'data' field — must be an object")
        )
    if head["version"] not in SUPPORTED_VERSIONS:
        message = (
            f"Unsupported protocol version '{head['version']}', "
            f"supported versions: {list(SUPPORTED_VERSIONS)}"
        )
        return Rejected(error_response(kind, corr_id, 400, message))
    return Request(kind=raw["kind"], corr_id=head["corrId"], auth=auth, data=data, envelope=raw)


def _salvage(raw: Any) -> tuple[str, str]:
    """Whatever ``kind`` and ``corrId`` a broken envelope still carries, for its error."""
    if not isinstance(raw, dict):
        return UNKNOWN_KIND, UNKNOWN_CORR_ID
    kind = raw.get("kind")
    head = raw.get("head")
    corr_id = head.get("corrId") if isinstance(head, dict) else None
    return (
        kind if isinstance(kind, str) else UNKNOWN_KIND,
        corr_id if isinstance(corr_id, str) else UNKNOWN_CORR_ID,
    )


def error_response(kind: str, corr_id: str, status: int, message: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "head": {"corrId": corr_id, "status": status, "version": PROTOCOL_VERSION},
        "data": message,
    }


def response_envelope(flat: dict[str, Any]) -> dict[str, Any]:
    """Wrap a flat response, correcting the parts the SDK's wrapper gets wrong.

    - a create answers 200, never the model's 201;
    - an error's ``data`` is its message string (``{"error": ...}`` fails
      the TypeScript SDK's validators);
    - ``corrId`` is always a string.
    """
    envelope = wrap_response_envelope(flat)
    head = envelope["head"]
    if head["status"] == 201:
        head["status"] = 200
    if not isinstance(head["corrId"], str):
        head["corrId"] = UNKNOWN_CORR_ID
    data = envelope["data"]
    if head["status"] >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        envelope["data"] = error if isinstance(error, str) else f"Request failed ({head['status']})"
    return envelope


def encode(value: Any) -> bytes:
    return _encoder.encode(value)
