"""Structured logs: one JSON object per line, carrying the pipeline id.

Code that works on a pipeline wraps the work in :func:`pipeline_context`;
every line logged inside it, by our code or a library's, carries
``pipeline_id`` without passing it around. Extra fields given with
``logger.info(..., extra={"fields": {...}})`` are merged into the line. A line
written inside a span (see :mod:`pipeline_shared.tracing`) carries its
``trace_id`` and ``span_id``.

No credential reaches a line, whoever logs it and wherever a client put it
(a header, the query, a form or JSON body, a cookie): every finished line,
traceback included, passes through :func:`redact` before it is written. Code
still never logs a credential on purpose (the audit lines name a key by its
id); this is the net under everything else, uvicorn's and libraries' lines
included.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

from .tracing import log_fields

#: What a line says instead of a credential.
REDACTED = "[redacted]"
#: ``name=value`` (a query, a form, a cookie header) where the name says the value is a credential:
#: access_token, api_key, X-API-Key, client_secret, password, signature, the page's session cookies...
_NAMED_SECRET = re.compile(
    r"(?i)((?<![A-Za-z0-9])[A-Za-z0-9_.-]*(?:token|key|secret|passw|signature|credential|session|auth|sign_in)"
    r"[A-Za-z0-9_.-]*(?:=|%3D))[^&\s\"';,\\]+"
)
#: What credentials look like wherever they are: a gateway API key (``pl_<id>_<secret>``; the id, which
#: the audit lines log, is kept), an ``Authorization`` scheme's credential, a JWT or a signed session
#: cookie (both begin with base64 of ``{"``).
_SHAPED_SECRETS = (
    (re.compile(r"(?<![A-Za-z0-9])(pl_[a-z0-9]{1,32}_)[A-Za-z0-9_-]{8,}"), rf"\1{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9])pl_[A-Za-z0-9_-]{12,}"), f"pl_{REDACTED}"),
    # RFC 6750's b64token, at least 8 long: the words of a message ("the Bearer scheme") stay.
    (re.compile(r"(?i)\b(Bearer|Basic)(\s+|%20|\+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1\2{REDACTED}"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{6,}(?:\.[A-Za-z0-9_-]+){1,2}"), REDACTED),
)


def redact(text: str) -> str:
    """``text`` with every credential it holds replaced by :data:`REDACTED`."""
    text = _NAMED_SECRET.sub(rf"\1{REDACTED}", text)
    for shape, replacement in _SHAPED_SECRETS:
        text = shape.sub(replacement, text)
    return text


_pipeline_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("pipeline_id", default=None)


@contextlib.contextmanager
def pipeline_context(pipeline_id: str) -> Iterator[None]:
    """Tag every log line inside the block with ``pipeline_id``."""
    token = _pipeline_id.set(pipeline_id)
    try:
        yield
    finally:
        _pipeline_id.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        pipeline_id = _pipeline_id.get()
        if pipeline_id is not None:
            line["pipeline_id"] = pipeline_id
        # The span the line was written in, so a trace backend and the logs find each other.
        line.update(log_fields())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str))


def configure_logging(service: str, level: str) -> None:
    """Send every logger's output to stdout as JSON lines, once per process."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request access lines, and the SDK's line per promise operation, would
    # drown the pipeline lines; their warnings and errors still show.
    for chatty in ("uvicorn.access", "aiohttp.access", "resonate"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
