"""An OTLP/HTTP trace receiver on loopback, and the services' tracing switched on to send to it.

:class:`OtlpReceiver` is the receiving half of the OTLP/HTTP protocol for
traces: ``POST /v1/traces`` with a binary protobuf
``ExportTraceServiceRequest`` (opentelemetry-proto), answered 200 with an
empty ``ExportTraceServiceResponse``. It runs in a thread of its own: the
SDK's exporter sends from its own thread and blocks until answered, so a
receiver in the test's event loop would deadlock a flush made from it.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.util._once import Once

from pipeline_shared.tracing import configure_tracing

#: The OTLP/HTTP path of traces (the exporter appends it to OTEL_EXPORTER_OTLP_ENDPOINT).
TRACES_PATH = "/v1/traces"


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    #: None for a root span.
    parent_span_id: str | None
    name: str
    #: The instrumentation scope: which service's code made it (pipeline_api, pipeline_worker...).
    scope: str
    #: The resource's service.name.
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    #: 0 unset, 1 ok, 2 error (the protocol's StatusCode).
    status: int = 0
    status_message: str = ""
    #: The events' names and attributes, flattened (a secret could hide there too).
    events: list[Any] = field(default_factory=list)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        scope=scope_spans.scope.name,
                        service=str(resource.get("service.name", "")),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        status=span.status.code,
                        status_message=span.status.message,
                        events=[
                            (event.name, {kv.key: _value(kv.value) for kv in event.attributes}) for event in span.events
                        ],
                    )
                )
    return spans


class OtlpReceiver:
    """Collects every span exported to it; ``url`` is its base (OTEL_EXPORTER_OTLP_ENDPOINT)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != TRACES_PATH:
                    self.send_response(404)
                    self.end_headers()
                    return
                received = decode(body)
                with receiver._lock:
                    receiver.spans.extend(received)
                    receiver.requests += 1
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def trace_of(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans received of one trace, in the order they started."""
        with self._lock:
            return sorted((s for s in self.spans if s.trace_id == trace_id), key=lambda s: s.start_ns)

    def named(self, name: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.name == name]


@contextlib.contextmanager
def tracing_to(receiver: OtlpReceiver, service_name: str = "pipeline-tests") -> Iterator[Any]:
    """This process's tracing switched on as a service's is, by its OTEL_* variables, exporting to ``receiver``.

    Yields the provider (``force_flush()`` sends what is batched). On leaving,
    the provider is shut down and the API's global one unset again: OTel's
    global may be set once per process, and its own test utilities
    (opentelemetry-test-utils' ``reset_trace_globals``) reset it the same way.
    """
    previous = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
    try:
        provider = configure_tracing(service_name)
    finally:
        if previous is None:
            del os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
        else:
            os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = previous
    assert provider is not None
    try:
        yield provider
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER = None
        trace._TRACER_PROVIDER_SET_ONCE = Once()
