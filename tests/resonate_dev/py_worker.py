"""A Python SDK worker in its own OS process, for the stand-in's tests.

    python py_worker.py URL GROUP PID [--ttl SECONDS]

Joins GROUP as PID over HTTP + SSE and serves the functions below. Prints one
JSON line, ``{"ready": true, ...}``, once its event stream is open -- before
that the stand-in would drop messages for it -- then runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

from resonate.context import Context
from resonate.error import ApplicationError
from resonate.resonate import Resonate

PID = ""


async def greet(ctx: Context, name: str) -> dict[str, Any]:
    """A leaf another group's workflow rpc's to."""
    return {"greeting": f"hello {name}", "servedBy": PID}


async def orchestrate(ctx: Context, name: str, target_group: str) -> dict[str, Any]:
    """A workflow that rpc's to ``greet`` in another group and waits for it."""
    reply = await ctx.options(target=target_group).rpc("greet", name)
    return {"reply": reply, "orchestratedBy": PID}


async def call_typescript(ctx: Context, name: str, ts_group: str) -> dict[str, Any]:
    """A workflow that rpc's to the TypeScript worker's ``tsGreet``."""
    reply = await ctx.options(target=ts_group).rpc("tsGreet", name)
    return {"reply": reply, "orchestratedBy": PID}


async def await_approval(ctx: Context, timeout_seconds: float) -> dict[str, Any]:
    """Suspend on a bare promise settled from outside, or resume with its timeout."""
    approval = ctx.promise(timeout=timedelta(seconds=timeout_seconds))
    try:
        value = await approval
    except ApplicationError as exc:
        return {"outcome": "rejected", "message": str(exc), "resumedBy": PID}
    return {"outcome": "settled", "value": value, "resumedBy": PID}


async def nap(ctx: Context, seconds: float) -> dict[str, Any]:
    """A durable sleep: the workflow suspends on a timer the server resolves."""
    await ctx.sleep(timedelta(seconds=seconds))
    return {"rested": seconds, "wokenBy": PID}


async def fire_and_forget(ctx: Context, group: str) -> str:
    """Start ``where_am_i`` in ``group`` detached, and return its promise id at once."""
    return await ctx.options(target=group).detached("where_am_i", 7)


async def where_am_i(ctx: Context, n: int) -> dict[str, Any]:
    return {"servedBy": PID, "n": n}


async def start_once(ctx: Context, marker_dir: str) -> dict[str, Any]:
    """The first process to run this records itself and then hangs forever.

    Whoever runs it again -- after the first was killed and its lease ran out
    -- finishes at once and says who started it.
    """
    started = Path(marker_dir) / "started"
    if not started.exists():
        started.write_text(PID)
        await asyncio.Event().wait()
    return {"startedBy": started.read_text(), "finishedBy": PID}


class _AnnounceWhenConnected(logging.Filter):
    """Prints the ready line when the SDK logs that its SSE stream is open."""

    def __init__(self, group: str, pid: str) -> None:
        super().__init__()
        self.line = json.dumps({"ready": True, "group": group, "pid": pid})
        self.done = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.done and record.getMessage().startswith("SSE connection established"):
            self.done = True
            print(self.line, flush=True)
        return True


async def main() -> None:
    global PID
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("group")
    parser.add_argument("pid")
    parser.add_argument("--ttl", type=float, default=60.0)
    args = parser.parse_args()
    PID = args.pid

    logging.basicConfig(level=logging.WARNING)
    sse_logger = logging.getLogger("resonate.connections.sse")
    sse_logger.setLevel(logging.INFO)
    sse_logger.addFilter(_AnnounceWhenConnected(args.group, args.pid))

    resonate = Resonate(
        url=args.url, group=args.group, pid=args.pid, ttl=timedelta(seconds=args.ttl)
    )
    functions = (
        greet,
        orchestrate,
        call_typescript,
        await_approval,
        nap,
        fire_and_forget,
        where_am_i,
        start_once,
    )
    for fn in functions:
        resonate.register(fn)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    await stopping.wait()
    await resonate.stop()


if __name__ == "__main__":
    asyncio.run(main())
