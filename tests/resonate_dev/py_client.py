"""One Python SDK client action in its own OS process, for the stand-in's tests.

    python py_client.py URL rpc ID FUNC TARGET ARGS_JSON [--timeout SECONDS]
    python py_client.py URL resolve ID VALUE_JSON
    python py_client.py URL get ID

Prints one JSON line: ``{"ok": true, "value": ...}`` with the result, or
``{"ok": false, "error": TYPE, "message": ...}`` when the call failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import timedelta
from typing import Any

from resonate.resonate import Resonate
from resonate.types import Value


async def run(args: argparse.Namespace) -> Any:
    # A client only: it sends requests and listens for its own unblocks, and
    # serves nothing, so its group is its own.
    resonate = Resonate(url=args.url, group=f"client-{args.id}", pid=f"client-{args.id}")
    try:
        if args.action == "rpc":
            timeout = timedelta(seconds=args.timeout) if args.timeout else None
            handle = resonate.options(target=args.target, timeout=timeout).rpc(
                args.id, args.func, *json.loads(args.args)
            )
            return await handle.result()
        if args.action == "resolve":
            record = await resonate.promises.resolve(args.id, Value(data=json.loads(args.value)))
            return {"id": record.id, "state": record.state, "value": record.value.data}
        record = await resonate.promises.get(args.id)
        return {
            "id": record.id,
            "state": record.state,
            "value": record.value.data,
            "tags": record.tags,
        }
    finally:
        await resonate.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    sub = parser.add_subparsers(dest="action", required=True)
    rpc = sub.add_parser("rpc")
    rpc.add_argument("id")
    rpc.add_argument("func")
    rpc.add_argument("target")
    rpc.add_argument("args")
    rpc.add_argument("--timeout", type=float)
    resolve = sub.add_parser("resolve")
    resolve.add_argument("id")
    resolve.add_argument("value")
    get = sub.add_parser("get")
    get.add_argument("id")
    args = parser.parse_args()
    try:
        value = asyncio.run(run(args))
    except Exception as exc:
        print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)}))
        return 1
    print(json.dumps({"ok": True, "value": value}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
