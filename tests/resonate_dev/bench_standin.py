"""Load figures for the stand-in: request latency, wake-up latency and tick cost.

    uv run python tests/resonate_dev/bench_standin.py [--workflows 10000] [--wakeups 500]

Not a test (nothing here asserts); it prints figures. Two parts:

1. In process, the SDK's reference model against the stand-in's state:
   setting up N suspended workflows, an idle tick, and typical requests with
   N workflows suspended.
2. Over HTTP, against ``python -m resonate_dev`` on a loopback port: N
   workflows suspended on a bare promise each (task.create, task.fence,
   task.suspend, as the SDK sends them), then ``--wakeups`` of those promises
   settled at a steady rate while an SSE reader stands in for the worker
   group; reports request latency and settle-to-execute latency.

Traffic goes to 127.0.0.1 only, and every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import aiohttp
import httpx
from resonate.connections.local import ServerState

from resonate_dev.model import StandInState

T0 = 1_800_000_000_000
FAR = 4_000_000_000_000


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def describe(name: str, samples_ms: list[float]) -> str:
    return (
        f"{name:<34} n={len(samples_ms):<6} p50={pct(samples_ms, 50):7.3f} ms  "
        f"p99={pct(samples_ms, 99):7.3f} ms  max={max(samples_ms):7.3f} ms"
    )


# ---------------------------------------------------------------------------
# 1. In process
# ---------------------------------------------------------------------------


def flat(kind: str, **data: Any) -> dict[str, Any]:
    return {"kind": kind, "corrId": "c", **data}


def action(kind: str, **data: Any) -> dict[str, Any]:
    return {"kind": kind, "head": {"corrId": "c", "version": "2026-04-01"}, "data": data}


def suspend_one(state: ServerState, n: int, now: int) -> None:
    id = f"wf{n}"
    target = {"resonate:target": "poll://any@wf", "resonate:origin": id, "resonate:branch": id}
    state.apply(
        now,
        flat(
            "task.create",
            pid="w",
            ttl=60_000,
            action=action("promise.create", id=id, timeoutAt=FAR, param={}, tags=target),
        ),
    )
    version = state.tasks[id].version
    child = {
        "resonate:external": "true",
        "resonate:origin": id,
        "resonate:branch": f"{id}:1",
        "resonate:parent": id,
    }
    state.apply(
        now,
        flat(
            "task.fence",
            id=id,
            version=version,
            action=action("promise.create", id=f"{id}:1", timeoutAt=FAR - n, param={}, tags=child),
        ),
    )
    callback = action("promise.register_callback", awaiter=id, awaited=f"{id}:1")
    state.apply(now, flat("task.suspend", id=id, version=version, actions=[callback]))


def in_process(workflows: int) -> None:
    print(f"\n== in process, {workflows} suspended workflows ({2 * workflows} pending promises) ==")
    for name, state in (
        ("SDK model (ServerState)", ServerState()),
        ("stand-in (StandInState)", StandInState()),
    ):
        started = time.perf_counter()
        for n in range(workflows):
            suspend_one(state, n, T0)
        setup = time.perf_counter() - started
        ticks = []
        for step in range(50):
            t = time.perf_counter()
            state.tick(T0 + step)
            ticks.append((time.perf_counter() - t) * 1000)
        requests = []
        for n in range(200):
            id = f"extra{n}"
            t = time.perf_counter()
            state.apply(
                T0,
                flat(
                    "promise.create",
                    id=id,
                    timeoutAt=FAR,
                    param={},
                    tags={"resonate:target": "poll://any@x"},
                ),
            )
            state.apply(T0, flat("promise.settle", id=id, state="resolved", value={}))
            requests.append((time.perf_counter() - t) * 1000 / 2)
        t = time.perf_counter()
        state.tick(FAR - 1)  # every awaited promise but one times out in this one tick
        burst = (time.perf_counter() - t) * 1000
        resumed = sum(1 for task in state.tasks.values() if task.state == "pending")
        print(f"{name}: setup {setup * 1e6 / (3 * workflows):.1f} us/request")
        print("  " + describe("idle tick", ticks))
        print("  " + describe("create+settle (per request)", requests))
        print(
            f"  one tick timing out {workflows - 1} awaited promises: {burst:.1f} ms "
            f"({resumed} workflows resumed)"
        )


# ---------------------------------------------------------------------------
# 2. Over HTTP
# ---------------------------------------------------------------------------


class Client:
    """Request envelopes over aiohttp, the Python SDK's own HTTP client."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        self.latencies: dict[str, list[float]] = {}

    async def send(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        body = {"kind": kind, "head": {"corrId": "b", "version": "2026-04-01"}, "data": data}
        started = time.perf_counter()
        async with self.http.post(f"{self.url}/", json=body) as response:
            answer = await response.json()
        self.latencies.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
        return answer


async def suspend_over_http(client: Client, n: int) -> None:
    id = f"wf{n}"
    target = {
        "resonate:target": "poll://any@bench-workers",
        "resonate:origin": id,
        "resonate:branch": id,
    }
    await client.send(
        "task.create",
        {
            "pid": "bench",
            "ttl": 600_000,
            "action": action("promise.create", id=id, timeoutAt=FAR, param={}, tags=target),
        },
    )
    child = {
        "resonate:external": "true",
        "resonate:origin": id,
        "resonate:branch": f"{id}:1",
        "resonate:parent": id,
    }
    await client.send(
        "task.fence",
        {
            "id": id,
            "version": 1,
            "action": action("promise.create", id=f"{id}:1", timeoutAt=FAR, param={}, tags=child),
        },
    )
    callback = action("promise.register_callback", awaiter=id, awaited=f"{id}:1")
    await client.send("task.suspend", {"id": id, "version": 1, "actions": [callback]})


async def over_http(url: str, workflows: int, wakeups: int, rate: float) -> None:
    print(f"\n== over HTTP at {url}, {workflows} suspended workflows ==")
    client = Client(url)
    started = time.perf_counter()
    semaphore = asyncio.Semaphore(32)

    async def one(n: int) -> None:
        async with semaphore:
            await suspend_over_http(client, n)

    await asyncio.gather(*(one(n) for n in range(workflows)))
    elapsed = time.perf_counter() - started
    print(
        f"suspended {workflows} workflows in {elapsed:.1f} s "
        f"({3 * workflows / elapsed:.0f} requests/s, 32 in flight)"
    )
    for kind, samples in client.latencies.items():
        print("  " + describe(kind, samples))
    client.latencies.clear()

    arrivals: dict[str, float] = {}
    opened = asyncio.Event()

    async def worker_stream() -> None:
        async with client.http.get(f"{url}/poll/bench-workers/reader") as response:
            opened.set()
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    arrivals[message["data"]["task"]["id"]] = time.perf_counter()

    reader = asyncio.create_task(worker_stream())
    await opened.wait()
    sent: dict[str, float] = {}
    interval = 1 / rate
    next_at = time.perf_counter()
    for n in range(wakeups):
        id = f"wf{n}"
        now = time.perf_counter()
        if next_at > now:
            await asyncio.sleep(next_at - now)
        next_at += interval
        sent[id] = time.perf_counter()
        await client.send("promise.settle", {"id": f"{id}:1", "state": "resolved", "value": {}})
    deadline = time.perf_counter() + 10
    while len(arrivals) < wakeups and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    reader.cancel()
    latencies = [(arrivals[id] - sent[id]) * 1000 for id in sent if id in arrivals]
    print(f"settled {wakeups} awaited promises at {rate:.0f}/s with {workflows} suspended:")
    print("  " + describe("promise.settle request", client.latencies["promise.settle"]))
    print("  " + describe("settle -> execute on SSE", latencies))
    print(f"  execute messages received: {len(latencies)}/{wakeups}")
    await client.http.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--wakeups", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0, help="settles per second")
    args = parser.parse_args()

    in_process(args.workflows)

    port = free_port()
    standin = subprocess.Popen(
        [sys.executable, "-m", "resonate_dev", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "RESONATE_LEVEL": "info"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/ready", trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        asyncio.run(over_http(url, args.workflows, args.wakeups, args.rate))
    finally:
        standin.send_signal(signal.SIGTERM)
        output, _ = standin.communicate(timeout=15)
    # The stand-in reports its own tick figures when it stops.
    for line in output.decode(errors="replace").splitlines():
        if "stopped after" in line:
            print("stand-in:", line.split(": ", 1)[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
