"""One trace per pipeline on the compose stack: three containers, one trace, exported by OTLP/HTTP.

The gateway, worker and notifier are recreated with OTEL_EXPORTER_OTLP_ENDPOINT
pointing at an OTLP receiver in this process, listening on the stack network's
gateway address (the host as the containers reach it, and nobody else); they
are recreated without it afterwards, as the rest of the suite runs them.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator

from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.stack import Stack
from tests.support.stack_clients import Gateway, new_id

TRACED_SERVICES = ("api", "worker", "notifier")


def _network_gateway(stack: Stack) -> str:
    """The host's address on the stack's network, where its containers reach the host."""
    container = stack.container_name("api")
    networks = json.loads(
        subprocess.run(
            ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    [network] = networks  # compose's default network of the project
    return subprocess.run(
        ["docker", "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", network],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@contextlib.contextmanager
def _traced(stack: Stack, endpoint: str) -> Iterator[None]:
    """The three services recreated exporting to ``endpoint``; recreated without tracing after."""

    def recreate() -> None:
        stack.up(*TRACED_SERVICES)

    # Spans sent a fifth of a second after they end rather than the default five seconds.
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    stack.environment.update(traced)
    try:
        recreate()
        yield
    finally:
        for name in traced:
            del stack.environment[name]
        recreate()


#: Each service's spans of a one-job pipeline that calls back.
EXPECTED = {
    ("pipeline-api", "pipeline.start"),
    ("pipeline-worker", "pipeline.trigger"),
    ("pipeline-api", "pipeline.callback"),
    ("pipeline-worker", "pipeline.step"),
    ("pipeline-worker", "pipeline.wait"),
    ("pipeline-notifier", "pipeline.email"),
    ("pipeline-worker", "pipeline.finish"),
}


def _spans_of(receiver: OtlpReceiver, pipeline_id: str, timeout: float = 30) -> list[ReceivedSpan]:
    """The pipeline's trace, once every service's spans have arrived (each sends its own as they end)."""
    deadline = time.monotonic() + timeout
    while True:
        starts = [s for s in receiver.named("pipeline.start") if s.attributes.get("pipeline.id") == pipeline_id]
        spans = receiver.trace_of(starts[0].trace_id) if starts else []
        if {(s.service, s.name) for s in spans} >= EXPECTED or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


def test_a_pipeline_run_by_three_containers_is_one_whole_trace(stack: Stack, gateway: Gateway) -> None:
    host = _network_gateway(stack)
    with OtlpReceiver(host=host) as receiver, _traced(stack, f"http://{host}:{receiver.port}"):
        pipeline_id = new_id("traced")
        assert gateway.start(pipeline_id, parameters={}).status_code == 202
        assert gateway.wait_for(pipeline_id, "succeeded")["notification"]["delivered"] is True
        spans = _spans_of(receiver, pipeline_id)

    by_service = {(s.service, s.name) for s in spans}
    assert by_service == EXPECTED
    ids = {s.span_id for s in spans}
    assert [s.name for s in spans if s.parent_span_id is None] == ["pipeline.start"]
    assert all(s.parent_span_id in ids for s in spans if s.parent_span_id is not None)
    said = json.dumps([[s.name, s.attributes, s.events, s.status_message] for s in spans])
    assert f"{pipeline_id}@example.com" not in said and "@" not in said and "http" not in said
