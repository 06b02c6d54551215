"""One trace per pipeline: OpenTelemetry spans joined through the pipeline's root promise.

A pipeline outlives any process: it starts on the gateway, waits days on
Resonate, resumes on whichever worker is free, and emails from the notifier.
Nothing held in memory survives that, so the trace context travels the way
the pipeline does, durably: the gateway's ``pipeline.start`` span writes its
W3C ``traceparent`` into the root promise's :data:`TRACEPARENT_TAG` when it
creates it, and every later span of the pipeline, in any service, is a child
of that context read back from the root (:class:`TraceContexts`). A step
resumed a week later on another worker joins the same trace. A pipeline
started before the tag existed has none; its spans then start traces of
their own (nothing fails).

Workflows replay from the top, so spans are made only in leaf steps (which
run once, barring a crash) or from recorded times when the pipeline ends
(:func:`recorded_span`): a span never repeats because code replayed.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (:func:`configure_tracing`):
then the API's tracer is a no-op and no root is read for its context. The
SDK itself reads the other standard variables (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``,
``OTEL_EXPORTER_OTLP_HEADERS``...), per the OpenTelemetry SDK
configuration spec.

No secret reaches a span: a span's attributes are only the names in
:data:`ATTRIBUTES` (ids, job and step names, states, counts; never an email
address, a parameter's value, a URL, a key or a token), refused otherwise,
and a failure is recorded by its exception's type alone, never its message
(an SMTP reply or a Databricks error can quote an address or a parameter).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .promise_tree import TRACEPARENT_TAG

__all__ = [
    "ATTRIBUTES",
    "FASTAPI_TELEMETRY",
    "TRACEPARENT_TAG",
    "SpanKind",
    "TraceContexts",
    "configure_tracing",
    "context_of",
    "current_traceparent",
    "enabled",
    "log_fields",
    "recorded_span",
    "set_attributes",
    "span",
]

logger = logging.getLogger(__name__)

#: Every attribute a span of ours may carry. Each is an id, a name from the catalogue or the
#: pipeline's code, a state or a count: nothing a user typed as a value, nothing that grants access.
ATTRIBUTES = frozenset(
    {
        "pipeline.id",
        "pipeline.job",
        "pipeline.state",
        "pipeline.created",
        "pipeline.step",
        "pipeline.step.kind",
        "pipeline.step.name",
        "pipeline.attempt",
        "pipeline.attempts",
        "databricks.job_id",
        "databricks.run_id",
        "databricks.repair_id",
        "callback.status",
        "callback.outcome",
        "email.kind",
        "email.delivered",
    }
)

#: FastAPI's own telemetry (``FastAPI(telemetry=...)``, from FastAPI 0.165), switched off in every app of
#: ours. It would trace each request with the global provider ours installs, and it writes a request's
#: query into ``url.query`` redacting only a few cloud signatures: a key sent as ``?access_token=``
#: would reach the span. The gateway's spans are ours, which carry only :data:`ATTRIBUTES`.
FASTAPI_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}

#: The root promises' trace contexts remembered per process (a tag never changes once written).
CONTEXT_CACHE_SIZE = 10_000

_PROPAGATOR = TraceContextTextMapPropagator()
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def configure_tracing(service_name: str, environ: Mapping[str, str] = os.environ) -> Any:
    """Export this process's spans by OTLP/HTTP if an endpoint is configured; the provider, or None (off).

    ``service_name`` is the default of ``OTEL_SERVICE_NAME``. The SDK is
    imported only when tracing is on.
    """
    if not any(environ.get(name) for name in _ENDPOINT_VARIABLES):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over what it is given;
    # the sampler is read from OTEL_TRACES_SAMPLER(_ARG) by the provider (default: parent-based, always on).
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def enabled() -> bool:
    """Whether spans go anywhere (a provider was installed), so that their context is worth a read."""
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span; None when there is none (tracing off)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> Context | None:
    """The context a traceparent names, as a remote parent; None for none or a malformed one."""
    if not traceparent:
        return None
    context = _PROPAGATOR.extract({"traceparent": traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


class _Promises(Protocol):
    async def get(self, id: str) -> Any: ...


class TraceContexts:
    """The trace context of each pipeline, read from its root promise once per process."""

    def __init__(self, size: int = CONTEXT_CACHE_SIZE) -> None:
        self._size = size
        self._known: OrderedDict[str, Context | None] = OrderedDict()

    async def of(self, promises: _Promises, pipeline_id: str) -> Context | None:
        """Pipeline ``pipeline_id``'s trace context; None when tracing is off, or it has none or is unreadable."""
        if not enabled():
            return None
        if pipeline_id in self._known:
            self._known.move_to_end(pipeline_id)
            return self._known[pipeline_id]
        try:
            root = await promises.get(pipeline_id)
        except Exception as exc:
            # A span without its parent is better than a step that fails for the want of one.
            logger.debug("no trace context for pipeline %s: %s", pipeline_id, type(exc).__name__)
            return None
        context = context_of((root.tags or {}).get(TRACEPARENT_TAG))
        self._known[pipeline_id] = context
        if len(self._known) > self._size:
            self._known.popitem(last=False)
        return context


def _checked(attributes: Mapping[str, Any]) -> dict[str, str | int | bool]:
    """``attributes`` without the unset ones; ValueError for a name not in :data:`ATTRIBUTES`."""
    unknown = set(attributes) - ATTRIBUTES
    if unknown:
        raise ValueError(f"span attributes {sorted(unknown)} are not in tracing.ATTRIBUTES")
    return {name: value for name, value in attributes.items() if value is not None}


@contextlib.contextmanager
def span(
    scope: str,
    name: str,
    *,
    parent: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span around the block, current inside it (log lines carry its ids), child of ``parent``.

    ``parent`` None: the span starts a trace, never joins whatever span is
    current (a step runs in the context its task happened to be made in,
    which is not its pipeline's). An exception marks the span failed with
    its type only and passes on.
    """
    tracer = trace.get_tracer(scope)
    with tracer.start_as_current_span(
        name,
        context=parent if parent is not None else Context(),
        kind=kind,
        attributes=_checked(attributes or {}),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            if isinstance(exc, Exception):
                current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def set_attributes(current: Span, attributes: Mapping[str, Any]) -> None:
    """Add attributes to a span, checked as :func:`span` checks them."""
    current.set_attributes(_checked(attributes))


def recorded_span(
    scope: str,
    name: str,
    *,
    parent: Context | None,
    start_ms: int,
    end_ms: int,
    attributes: Mapping[str, Any] | None = None,
    failed: bool = False,
) -> Span:
    """Emit a span that already happened, from times a durable record kept (epoch ms); the span.

    How a wait of days becomes a span: its start and end are read from the
    pipeline's records when it ends, not held by a process meanwhile.
    """
    tracer = trace.get_tracer(scope)
    done = tracer.start_span(
        name,
        context=parent if parent is not None else Context(),
        attributes=_checked(attributes or {}),
        start_time=start_ms * 1_000_000,
    )
    if failed:
        done.set_status(Status(StatusCode.ERROR))
    done.end(end_time=max(start_ms, end_ms) * 1_000_000)
    return done


def log_fields() -> dict[str, str]:
    """The current span's ``trace_id`` and ``span_id`` (hex, as trace backends show them); empty without one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": trace.format_trace_id(context.trace_id), "span_id": trace.format_span_id(context.span_id)}
