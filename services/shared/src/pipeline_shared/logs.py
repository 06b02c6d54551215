"""Structured logs: one JSON object per line, carrying the pipeline id.

Code that works on a pipeline wraps the work in :func:`pipeline_context`;
every line logged inside it, by our code or a library's, carries
``pipeline_id`` without passing it around. Extra fields given with
``logger.info(..., extra={"fields": {...}})`` are merged into the line.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

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
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        pipeline_id = _pipeline_id.get()
        if pipeline_id is not None:
            line["pipeline_id"] = pipeline_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


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
