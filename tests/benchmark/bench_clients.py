"""What the benchmark does to the stack: start pipelines, call back as the notebook, read every service's view.

Everything goes to published ports on 127.0.0.1. The HTTP clients are
aiohttp rather than httpx because the load generator shares two cores with
the stack it measures, and aiohttp spends about half the CPU per request;
every HTTP client here shares that one library, so the trivial endpoint and
the callback endpoint see the same load generator. Resonate's durable state
is read from its database with psycopg (:class:`ResonateReader`).

Times that cross processes are epoch milliseconds: every container reads the
same kernel clock as the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from resonate.codec import Codec, NoopEncryptor
from resonate.resonate import Resonate
from resonate.types import Value
from resonate_pg import PostgresConnection

from pipeline_shared import promise_tree
from pipeline_shared.invocations import create_pipeline_root
from pipeline_shared.models import PipelineSpec
from pipeline_shared.promise_tree import PipelineTree
from pipeline_shared.resonate_client import ResonateDatabase
from pipeline_shared.settings import DEVELOPMENT_SIGNING_SECRET
from pipeline_shared.signing import derive_callback_key, sign_callback
from tests.support.stack_clients import AUTHENTICATED

#: compose.yaml's development values: the benchmark signs as the notebook does
#: and calls the emulator as the worker does.
SIGNING_SECRET = DEVELOPMENT_SIGNING_SECRET
EMULATOR_TOKEN = "dapi-emulator-dev-token"
#: The tables of resonate-pg's schema (resonate.sql), in the order the report lists them.
RESONATE_TABLES = ("promises", "tasks", "callbacks", "listeners", "task_resumes", "outbox", "schedules")
#: Upper bound on open connections per service; open-loop phases may have
#: hundreds of requests in flight when the stack falls behind.
MAX_CONNECTIONS = 1024
#: Idle connections are closed by the client after this long, before uvicorn
#: closes them at its 5 s keep-alive timeout: a request must never be written
#: into a connection the server is closing.
KEEPALIVE_SECONDS = 3
#: No single request may hang the benchmark.
REQUEST_TIMEOUT_SECONDS = 60
#: The gateway's PIPELINE_FINISH_GRACE_SECONDS default: a root's deadline is its timeout plus this.
GATEWAY_FINISH_GRACE_SECONDS = 24 * 3600
#: Whose the roots the benchmark creates itself are (the principal its API key stands for).
BENCH_OWNER = "benchmark"
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
    #: The job step it reports on; None for a one-job workflow.
    step: str | None = None


def callback_promise_for(pipeline_id: str, step: str | None = None) -> str:
    """The promise the original run of ``pipeline_id``'s job settles.

    ``step`` None: a one-job workflow (``PipelineSpec.version`` None), whose
    callback promise hangs off the pipeline (``P:1``); else the job step of
    a pipeline run by its code, whose own promises hang off the step
    (``P:N.1``).
    """
    return promise_tree.callback_promise_id(promise_tree.base_of(pipeline_id, step))


def signed_callback(pipeline_id: str, step: str | None = None, result: dict[str, Any] | None = None) -> SignedCallback:
    """A success callback for ``pipeline_id`` (its job step ``step``), signed with its key; each a new webhook-id."""
    promise_id = callback_promise_for(pipeline_id, step)
    payload = {"promise_id": promise_id, "status": "success", "result": CALLBACK_RESULT if result is None else result}
    body = json.dumps(payload).encode()
    headers = sign_callback(derive_callback_key(SIGNING_SECRET, promise_id), body)
    return SignedCallback(pipeline_id, body, headers | {"content-type": "application/json"}, step)


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
        payload = {"id": pipeline_id, "email": f"{pipeline_id}@example.com", "parameters": {}}
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
        #: The control routes (/emulator) and the Jobs API alike need the token.
        self.http.headers["authorization"] = f"Bearer {EMULATOR_TOKEN}"

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

    async def calls(self) -> dict[str, int]:
        """The Jobs API calls the workspace has answered so far: ``runs_list_calls``, ``runs_get_calls``."""
        return await self._json("GET", "/emulator/calls")

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


@dataclass(frozen=True)
class PromiseRow:
    """One row of ``resonate.promises``; ``value`` decoded as the SDK decodes it; times are the database's epoch ms."""

    id: str
    state: str
    value: Any
    created_at: int
    settled_at: int | None


@dataclass(frozen=True)
class Footprint:
    """What the Resonate database holds at one instant: rows and bytes of each table, and of the whole database."""

    rows: dict[str, int]
    bytes: dict[str, int]
    database_bytes: int


class ResonateReader:
    """Reads Resonate's durable state straight from its database, as the superuser, with plain SELECTs.

    Not through the protocol: the services' roles may only call the stored
    procedures, and the protocol has no way to list tasks by state or to say
    what a table weighs. The superuser sees the rows the procedures keep, on
    the published port on 127.0.0.1. It never writes.

    ``value_data`` holds what the SDK sent, base64 of JSON, so the SDK's own
    codec decodes it (no encryptor: the services set none).
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._connection: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._codec = Codec(NoopEncryptor())

    async def _rows(self, query: sql.Composable | str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._connection is None or self._connection.closed:
            self._connection = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, application_name="benchmark", connect_timeout=REQUEST_TIMEOUT_SECONDS
            )
        cursor = await self._connection.execute(query, params)
        # A command (ALTER SYSTEM) answers no rows.
        return await cursor.fetchall() if cursor.description is not None else []

    async def promises(self, promise_ids: Sequence[str]) -> dict[str, PromiseRow]:
        """The promises of ``promise_ids`` that exist, by id."""
        rows = await self._rows(
            "SELECT id, state, value_data, created_at, settled_at FROM resonate.promises WHERE id = ANY(%s)",
            (list(promise_ids),),
        )
        return {
            promise_id: PromiseRow(promise_id, state, self._codec.decode(Value(data=data)), created_at, settled_at)
            for promise_id, state, data, created_at, settled_at in rows
        }

    async def states(self, promise_ids: Sequence[str]) -> dict[str, str]:
        """The state (pending, resolved, ...) of each of ``promise_ids`` that exists."""
        rows = await self._rows("SELECT id, state FROM resonate.promises WHERE id = ANY(%s)", (list(promise_ids),))
        return dict(rows)

    async def count_functions(self) -> None:
        """Have Postgres count calls of the schema's functions (``track_functions``), from now on.

        Off by default (resonate-pg's image leaves it so); a superuser setting,
        taken up by every backend, the services' pooled ones included, at its
        next command. The benchmark's stack is removed afterwards with its volume.
        """
        await self._rows("ALTER SYSTEM SET track_functions = 'all'")
        await self._rows("SELECT pg_reload_conf()")

    async def function_calls(self) -> dict[str, int]:
        """Calls of each function of the ``resonate`` schema so far (``pg_stat_user_functions``), by name.

        Each backend reports its counts when it goes idle, at most once a
        second, else within ``STATS_FLUSH_SECONDS``: read after that long quiet.
        """
        rows = await self._rows(
            "SELECT funcname, sum(calls)::bigint FROM pg_stat_user_functions WHERE schemaname = 'resonate' GROUP BY 1"
        )
        return {name: int(calls) for name, calls in rows}

    async def task_ids(self, state: str) -> set[str]:
        """Ids of every task in ``state``."""
        return {task_id for (task_id,) in await self._rows("SELECT id FROM resonate.tasks WHERE state = %s", (state,))}

    async def footprint(self) -> Footprint:
        """Rows and bytes (``pg_total_relation_size``: heap, indexes, TOAST) of every table of the schema."""
        counts = sql.SQL(", ").join(
            sql.SQL("(SELECT count(*) FROM {})").format(sql.Identifier("resonate", t)) for t in RESONATE_TABLES
        )
        sizes = sql.SQL(", ").join(
            sql.SQL("pg_total_relation_size({})").format(sql.Literal(f"resonate.{t}")) for t in RESONATE_TABLES
        )
        (row,) = await self._rows(sql.SQL("SELECT {}, {}, pg_database_size(current_database())").format(counts, sizes))
        width = len(RESONATE_TABLES)
        return Footprint(
            rows=dict(zip(RESONATE_TABLES, row[:width], strict=True)),
            bytes=dict(zip(RESONATE_TABLES, row[width : 2 * width], strict=True)),
            database_bytes=row[-1],
        )

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


#: Longest a Postgres backend keeps counts it has not reported (PGSTAT_IDLE_INTERVAL, 10 s), with a margin.
STATS_FLUSH_SECONDS = 11.0


class RootStarter:
    """Creates pipelines' root promises exactly as the gateway's ``Pipelines._create_root`` does, and reads them.

    Straight to Resonate, with the gateway's own ``pipeline_shared.invocations.create_pipeline_root``
    (the deadline with the gateway's default finishing grace), at the Resonate version of the
    shape. So the benchmark measures a shape of pipeline whichever shape the gateway of the
    commit under test starts.
    """

    def __init__(self, dsn: str) -> None:
        self._database = ResonateDatabase(dsn, max_size=8)
        pid = uuid.uuid4().hex
        connection = PostgresConnection(sessions=self._database, pid=pid, group="benchmark", drive_timers=False)
        # A send-only client, as the gateway's: sources [] never drains the outbox.
        self._resonate = Resonate(network=connection, sources=[], group="benchmark", pid=pid, autostart=False)
        self._started = False

    async def create(self, spec: PipelineSpec, *, version: int, owner: str = BENCH_OWNER) -> None:
        self._start()
        await create_pipeline_root(
            self._resonate.promises,
            spec,
            finish_grace_seconds=GATEWAY_FINISH_GRACE_SECONDS,
            created_by=uuid.uuid4().hex,
            owner=owner,
            version=version,
        )

    async def spec(self, pipeline_id: str) -> PipelineSpec | None:
        """The spec a pipeline's root holds (as the gateway reads it), or None for a root that is no pipeline's."""
        self._start()
        return PipelineTree(await self._resonate.promises.get(pipeline_id), {}).spec

    def _start(self) -> None:
        if not self._started:
            self._resonate.start()
            self._started = True

    async def close(self) -> None:
        if self._started:
            await self._resonate.stop()
        await self._database.close()


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

    async def live_blocks(self) -> int:
        """The blocks the service's live objects hold, after a full collection (its test hooks' heap route)."""
        async with self.http.get("/test-hooks/heap") as response:
            if response.status != 200:
                raise ServiceError(f"GET /test-hooks/heap: {response.status} (is WORKER_TEST_HOOKS on?)")
            return int((await response.json())["allocated_blocks"])

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
