"""A rolling restart of every service, two replicas each, while pipelines run: nothing is lost or done twice.

An upgrade rolls the way this test restarts: per service, one replica is
stopped (SIGTERM, as an orchestrator stops a pod), started again and seen
healthy, then the other; gateway, worker and notifier in turn. Meanwhile a
pipeline is started every 0.75 s until the last replica is back (through a front
that passes a stopped gateway over, as a load balancer does), the notebooks
call back to ``api`` (either gateway, by the service's name) and the emails go
out, so every restart meets work in each of its stages. What carries the
work over each restart: the other replica takes new work at once; a task the
stopped worker or notifier held is taken over when its lease lapses
(TASK_LEASE_SECONDS, 6 s on the test stack); a callback that meets a stopped
gateway is retried by the notebook.

The figures it prints (pytest -s) are the ones docs/operations.md quotes.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.support.fault_batch import BATCH_SIZE, Batch
from tests.support.replicas import REPLICATED, ReplicaFront, second_replicas, wait_container_healthy
from tests.support.stack import Stack
from tests.support.stack_clients import Emulator, Gateway, MailSink, new_id

#: Seconds between two starts: pipelines keep being started until the last replica is back. The six
#: restarts take about 16 s, so the starts of AT_LEAST pipelines span them (at 2 s apart, the starts
#: alone took 40 s, and the test 53).
START_EVERY_SECONDS = 0.75
#: At least this many pipelines, however quick the restarts.
AT_LEAST = BATCH_SIZE
#: The notebooks call back this long after their runs leave PENDING, so callbacks go on throughout too.
NOTEBOOK_DELAY_SECONDS = 3
#: How long a replica stays down before it is started again (an image pull, a pod scheduled).
DOWN_SECONDS = 1.0


def test_a_rolling_restart_of_every_service_loses_nothing(stack: Stack, emulator: Emulator, mail: MailSink) -> None:
    with second_replicas(stack) as replicas:
        front = ReplicaFront(list(replicas.api_urls))
        batch = Batch(Gateway(stack.api_url, transport=front), emulator, mail, "rolling", size=0)
        rolled = threading.Event()
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=1) as pool:
            starting = pool.submit(_keep_starting, batch, rolled)
            try:
                restarts = [
                    (container, *_restart(container))
                    for service in REPLICATED
                    for container in replicas.containers[service]
                ]
            finally:
                rolled.set()
            rolling = time.monotonic() - began
            starting.result()
        batch.wait_for("succeeded", timeout=120)
        finished = time.monotonic() - began
        batch.assert_exactly_once()

    retried = _callbacks_retried(batch)
    print(
        f"\nrolling restart of {len(restarts)} containers in {rolling:.1f} s, {len(batch.ids)} pipelines started "
        f"from its beginning; all final after {finished:.1f} s"
    )
    for container, stopping, healthy in restarts:
        print(f"  {container}: stopped in {stopping:.1f} s, healthy {healthy:.1f} s after its start")
    print(f"  requests passed to the other gateway: {front.passed_over}; callbacks retried: {retried}")


def _keep_starting(batch: Batch, rolled: threading.Event) -> None:
    """Start a pipeline every START_EVERY_SECONDS until the restarts are over and AT_LEAST are started."""
    while not rolled.is_set() or len(batch.ids) < AT_LEAST:
        pipeline_id = new_id("rolling")
        batch.emulator.plan(pipeline_id, start_delay_seconds=NOTEBOOK_DELAY_SECONDS)
        response = batch.gateway.start(pipeline_id)
        assert response.status_code == 202, response.text
        batch.ids.append(pipeline_id)
        time.sleep(START_EVERY_SECONDS)


def _restart(container: str) -> tuple[float, float]:
    """Stop the container gracefully, leave it down a moment, start it; (seconds to stop, seconds to healthy)."""
    began = time.monotonic()
    subprocess.run(["docker", "stop", container], check=True, capture_output=True)
    stopping = time.monotonic() - began
    time.sleep(DOWN_SECONDS)
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    return stopping, wait_container_healthy(container)


def _callbacks_retried(batch: Batch) -> dict[str, int]:
    """Per pipeline whose notebook needed more than one attempt to call back: how many it made."""
    attempts = {}
    for pipeline_id in batch.ids:
        (run,) = batch.emulator.runs(pipeline_id)
        # The notebook prints a line per attempt (notebooks/pipeline_callback.py); its task's stdout holds them.
        attempts[pipeline_id] = json.dumps(batch.emulator.run(run["run_id"])).count("callback attempt")
    assert min(attempts.values()) >= 1, f"a notebook's attempts are not in its output: {attempts}"
    return {pipeline_id: n for pipeline_id, n in attempts.items() if n > 1}
