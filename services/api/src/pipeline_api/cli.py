"""Start a pipeline from a terminal and follow it to the end: the ``pipelines`` command.

The successor of the original example's ``trigger.py``. It is a plain client
of the gateway's HTTP API, so it works against any deployment::

    pipelines start --email you@example.com --param source=https://host/data.csv
    pipelines status nightly-2026-11-26
    pipelines cancel nightly-2026-11-26

``start`` and ``follow`` print each state change until the pipeline finishes
and exit 0 only when it succeeded.

It authenticates with the API key in ``PIPELINES_API_KEY``. Without one it
sends the development key, which only a gateway running with
``ENVIRONMENT=development`` and no keys file accepts: the compose stack on a
laptop works with no setup, and any other gateway answers 401.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

from .keys import DEVELOPMENT_API_KEY

#: Where the gateway listens when run with `docker compose up`.
DEFAULT_GATEWAY = "http://127.0.0.1:8000"

FINAL_STATES = {"succeeded", "failed", "cancelled", "timed_out"}


class GatewayError(Exception):
    pass


class Gateway:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 15.0) -> None:
        self._using_development_key = api_key is None
        headers = {"authorization": f"Bearer {api_key or DEVELOPMENT_API_KEY}"}
        self._client = httpx.Client(base_url=base_url, timeout=timeout, headers=headers)

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise GatewayError(f"cannot reach the gateway at {self._client.base_url}: {exc}") from exc
        body = _json(response)
        if response.is_error:
            hint = ""
            if response.status_code == 401 and self._using_development_key:
                hint = " (PIPELINES_API_KEY is not set, so the development key was sent)"
            raise GatewayError(
                f"{response.status_code} {body.get('code', '')}: {body.get('message', response.text)}{hint}"
            )
        return body


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"message": response.text}
    return body if isinstance(body, dict) else {"message": str(body)}


#: `follow`'s exit status for a pipeline that stopped to wait for a repair.
AWAITING_REPAIR_EXIT = 3


def _describe(doc: dict[str, Any]) -> str:
    parts = [f"{doc['id']}: {doc['state']}"]
    if doc.get("databricks"):
        parts.append(f"run {doc['databricks']['run_id']} {doc['databricks'].get('run_page_url') or ''}".rstrip())
    if doc.get("error"):
        parts.append(f"{doc['error']['type']}: {doc['error']['message']}")
    if doc["state"] == "succeeded" and doc.get("result") is not None:
        parts.append("result " + json.dumps(doc["result"], sort_keys=True)[:500])
    if doc["state"] == "awaiting_repair":
        parts.append(
            f"awaiting repair until {doc.get('repair_deadline')}: `pipelines repair {doc['id']}` "
            f"[--param NAME=VALUE] or `pipelines abandon {doc['id']}`"
        )
    if doc.get("notification") and doc["state"] in FINAL_STATES:
        note = doc["notification"]
        parts.append("email sent" if note["delivered"] else f"email NOT sent: {note.get('error')}")
    return " | ".join(parts)


def follow(gateway: Gateway, pipeline_id: str, interval: float, first: dict[str, Any] | None = None) -> int:
    seen: tuple[Any, ...] | None = None
    doc = first or gateway.request("GET", f"/pipelines/{pipeline_id}")
    while True:
        key = (doc["state"], doc.get("databricks"), doc.get("error"))
        if key != seen:
            print(f"{time.strftime('%H:%M:%S')}  {_describe(doc)}", flush=True)
            seen = key
        if doc["state"] in FINAL_STATES:
            return 0 if doc["state"] == "succeeded" else 1
        if doc["state"] == "awaiting_repair":
            # It waits for a person, possibly for days: a script is told, not held.
            return AWAITING_REPAIR_EXIT
        time.sleep(interval)
        doc = gateway.request("GET", f"/pipelines/{pipeline_id}")


def _parameters(pairs: list[str]) -> dict[str, str]:
    parameters = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--param takes NAME=VALUE, got {pair!r}")
        parameters[name] = value
    return parameters


def _describe_job(job: dict[str, Any]) -> str:
    """A job and its parameters, as `pipelines jobs` prints them."""
    marker = " (default)" if job["default"] else ""
    lines = [f"{job['name']}{marker}: {job['title']}; completes by {job['completion']}", f"  {job['description']}"]
    for parameter in job["parameters"]:
        rule = "required" if parameter["required"] else f"default {parameter['default']!r}"
        if parameter["allowed"]:
            rule += f"; one of {', '.join(parameter['allowed'])}"
        elif parameter["pattern"]:
            rule += f"; matches {parameter['pattern']}"
        lines.append(f"  --param {parameter['name']}=...  {parameter['description']} ({rule})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pipelines",
        description=__doc__.split("\n\n")[0],
        epilog="Environment: PIPELINES_GATEWAY (the gateway's URL), PIPELINES_API_KEY (an API key of that gateway; "
        "without one the development key is sent).",
    )
    parser.add_argument(
        "--gateway", default=os.environ.get("PIPELINES_GATEWAY", DEFAULT_GATEWAY), help="gateway base URL"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between status reads while following")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start a pipeline and follow it")
    start.add_argument("--job", help="the catalogue job to run (see `pipelines jobs`; default: the default job)")
    start.add_argument("--email", required=True)
    start.add_argument("--id", help="your pipeline id (default: generated)")
    start.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    start.add_argument("--timeout", type=int, help="seconds to wait for Databricks")
    start.add_argument("--no-follow", action="store_true", help="print the pipeline and return at once")
    commands.add_parser("jobs", help="list the catalogue's jobs you may start, with their parameters")
    repair = commands.add_parser("repair", help="repair a pipeline awaiting repair: rerun its run's failed tasks")
    repair.add_argument("id")
    repair.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a parameter to change")
    commands.add_parser("abandon", help="abandon a pipeline awaiting repair: it ends failed").add_argument("id")
    for name, help_text in (
        ("status", "print where a pipeline stands"),
        ("follow", "follow a pipeline until it finishes"),
        ("cancel", "cancel a pipeline and its Databricks run"),
    ):
        commands.add_parser(name, help=help_text).add_argument("id")
    args = parser.parse_args(argv)
    gateway = Gateway(args.gateway, os.environ.get("PIPELINES_API_KEY") or None)

    try:
        if args.command == "start":
            body: dict[str, Any] = {"email": args.email, "parameters": _parameters(args.param)}
            if args.id:
                body["id"] = args.id
            if args.job:
                body["job"] = args.job
            if args.timeout:
                body["timeout_seconds"] = args.timeout
            doc = gateway.request("POST", "/pipelines", json=body)
            if args.no_follow:
                print(_describe(doc))
                return 0
            return follow(gateway, doc["id"], args.interval, doc)
        if args.command == "jobs":
            for job in gateway.request("GET", "/jobs")["jobs"]:
                print(_describe_job(job))
            return 0
        if args.command == "repair":
            body = {"parameters": _parameters(args.param)}
            print(_describe(gateway.request("POST", f"/pipelines/{args.id}/repair", json=body)))
            return 0
        if args.command == "abandon":
            print(_describe(gateway.request("POST", f"/pipelines/{args.id}/abandon")))
            return 0
        if args.command == "status":
            print(_describe(gateway.request("GET", f"/pipelines/{args.id}")))
            return 0
        if args.command == "follow":
            return follow(gateway, args.id, args.interval)
        print(_describe(gateway.request("POST", f"/pipelines/{args.id}/cancel")))
        return 0
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
