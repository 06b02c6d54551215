"""What the benchmark does to the stack: start pipelines, call back as the notebook, read every service's view.

Everything goes to published ports on 127.0.0.1. The clients are aiohttp
rather than httpx because the load generator shares two cores with the stack
it measures, and aiohttp spends about half the CPU per request; every client
here shares that one library, so the trivial endpoint and the callback
endpoint see the same load generator.

Times that cross processes are epoch milliseconds: every container reads the
same kernel clock as the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from pipeline_shared import ids
from pipeline_shared.resonate_client import ResonateLink, connect
from pipeline_shared.settings import DEVELOPMENT_SIGNING_SECRET
from pipeline_shared.signing import derive_callback_key, sign_callback
from tests.integration.clients import AUTHENTICATED

#: compose.yaml's development values: the benchmark signs as the notebook does
#: and calls the emulator as the worker does.
SIGNING_SECRET = DEVELOPMENT_SIGNING_SECRET
EMULATOR_TOKEN = "dapi-emulator-dev-token"
#: The protocol version resonate-sdk 0.8.1 and the servers speak.
RESONATE_PROTOCOL_VERSION = "2026-04-01"
#: Upper bound on open connections per service; open-loop phases may have
#: hundreds of requests in flight when the stack falls behind.
MAX_CONNECTIONS = 1024
#: Idle connections are closed by the client after this long, before uvicorn
#: closes them at its 5 s keep-alive timeout: a request must never be written
#: into a connection the server is closing.
KEEPALIVE_SECONDS = 3
#: No single request may hang the benchmark.
REQUEST_TIMEOUT_SECONDS = 60
#: The result every benchmark callback reports (small, like the notebook's).
CALLBACK_RESULT = {"source": "benchmark", "row_count": 6, "column_count": 5}


def now_ms() -> float:
    return time.time() * 1000


class ServiceError(RuntimeError):
    """A service answered something the benchmark cannot go on with; the message has its answer."""


@dataclass(frozen=True)
class SignedCallback:
    """One callback request exactly as the notebook sends it."""

    pipeline_id: str
    body: bytes
    headers: dict[str, str]


def signed_callback(pipeline_id: str) -> SignedCallback:
    """A success callback for ``pipeline_id``, signed with its own key; each call gets a new webhook-id."""
    promise_id = ids.callback_promise_id(pipeline_id)
    body = json.dumps({"promise_id": promise_id, "status": "success", "result": CALLBACK_RESULT}).encode()
    headers = sign_callback(derive_callback_key(SIGNING_SECRET, promise_id), body)
    return SignedCallback(pipeline_id, body, headers | {"content-type": "application/json"})


def new_session(base_url: str, *, limit: int = MAX_CONNECTIONS) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base_url=base_url,
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit, keepalive_timeout=KEEPALIVE_SECONDS),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
    )


class Gateway:
    def __init__(self, url: str) -> None:
        self.http = new_session(url)

    async def start(self, pipeline_id: str) -> int:
        payload = {"id": pipeline_id, "email": f"{pipeline_id}@example.com", "parameters": {"label": "benchmark"}}
        async with self.http.post("/pipelines", json=payload, headers=AUTHENTICATED) as response:
            await response.read()
            return response.status

    async def callback(self, callback: SignedCallback) -> int:
        async with self.http.post("/callbacks/databricks", data=callback.body, headers=callback.headers) as response:
            await response.read()
            return response.status

    async def healthz(self) -> int:
        async with self.http.get("/healthz") as response:
            await response.read()
            return response.status

    async def close(self) -> None:
        await self.http.close()


class Emulator:
    def __init__(self, url: str) -> None:
        self.http = new_session(url)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self.http.request(method, path, **kwargs) as response:
            if response.status != 200:
                raise ServiceError(f"emulator {method} {path}: {response.status} {await response.text()}")
            return await response.json()

    async def set_default_plan(self, **plan: Any) -> None:
        await self._json("PUT", "/emulator/faults", json=plan)

    async def set_plan(self, pipeline_id: str, **plan: Any) -> None:
        await self._json("PUT", f"/emulator/faults/pipelines/{pipeline_id}", json=plan)

    async def runs(self) -> list[dict[str, Any]]:
        return (await self._json("GET", "/emulator/runs"))["runs"]

    async def run(self, run_id: int) -> dict[str, Any]:
        """The job run as the Jobs API answers ``runs/get`` (times in epoch ms)."""
        return await self._json(
            "GET",
            "/api/2.2/jobs/runs/get",
            params={"run_id": str(run_id)},
            headers={"authorization": f"Bearer {EMULATOR_TOKEN}"},
        )

    async def close(self) -> None:
        await self.http.close()


class MailSink:
    def __init__(self, url: str) -> None:
        self.http = new_session(url)

    async def clear(self) -> None:
        async with self.http.delete("/messages") as response:
            await response.read()

    async def stats(self) -> dict[str, int]:
        async with self.http.get("/stats") as response:
            return await response.json()

    async def messages(self) -> list[dict[str, Any]]:
        """Every message kept (at most MAILSINK_MAX_MESSAGES, 1000 by default), oldest first."""
        async with self.http.get("/messages") as response:
            return (await response.json())["messages"]

    async def wait_accepted(self, count: int, deadline: float) -> int:
        """Poll until ``count`` messages were accepted since start, or the deadline; returns the count seen."""
        while True:
            accepted = (await self.stats())["accepted"]
            if accepted >= count or time.monotonic() >= deadline:
                return accepted
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        await self.http.close()


class ResonateReader:
    """Reads durable state: promise records through the SDK, task searches as raw envelopes.

    The SDK has no task search, so that one request is written out here; the
    envelope is the protocol's (``kind``, ``head`` with ``corrId`` and
    ``version``, ``data``).
    """

    def __init__(self, url: str) -> None:
        self.http = new_session(url, limit=16)
        self.link: ResonateLink = connect(url, "benchmark", listen=False)
        self._started = False

    async def promise(self, promise_id: str) -> Any:
        if not self._started:
            self.link.resonate.start()
            self._started = True
        return await self.link.resonate.promises.get(promise_id)

    async def task_ids(self, state: str) -> set[str]:
        """Ids of every task in ``state`` (pages of 1000)."""
        found: set[str] = set()
        cursor: str | None = None
        while True:
            data: dict[str, Any] = {"state": state, "limit": 1000}
            if cursor is not None:
                data["cursor"] = cursor
            envelope = {
                "kind": "task.search",
                "head": {"corrId": uuid.uuid4().hex, "version": RESONATE_PROTOCOL_VERSION},
                "data": data,
            }
            async with self.http.post("/", json=envelope) as response:
                answer = await response.json()
            if answer["head"]["status"] != 200:
                raise ServiceError(f"task.search answered {answer['head']['status']}: {answer['data']}")
            found.update(task["id"] for task in answer["data"]["tasks"])
            cursor = answer["data"].get("cursor")
            if not cursor:
                return found

    async def close(self) -> None:
        await self.http.close()
        if self._started:
            await self.link.resonate.stop()


class Metrics:
    """A Prometheus endpoint, scraped into {sample name with labels: value}."""

    def __init__(self, url: str) -> None:
        self.http = new_session(url, limit=4)

    async def scrape(self) -> dict[str, float]:
        async with self.http.get("/metrics/") as response:
            text = await response.text()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    async def close(self) -> None:
        await self.http.close()


def histogram_delta(before: dict[str, float], after: dict[str, float], name: str) -> dict[str, Any]:
    """Count, mean and bucket counts of histogram ``name`` observed between two scrapes."""
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    buckets: list[tuple[float, float]] = []
    prefix = f"{name}_bucket{{le="
    for key, value in after.items():
        if key.startswith(prefix):
            bound = float(key[len(prefix) : -1])
            buckets.append((bound, value - before.get(key, 0.0)))
    buckets.sort()
    return {"count": int(count), "mean_seconds": total / count if count else None, "buckets": buckets}


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding the q-th observation."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 0)
        lower_bound, lower_count = bound, count
    return None
