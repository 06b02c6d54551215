"""Start, list and watch pipelines from a terminal or a script: the ``pipelines`` command.

The successor of the original example's ``trigger.py``. It is a plain client
of the gateway's HTTP API, so it works against any deployment::

    pipelines start --email you@example.com --param source=https://host/data.csv
    pipelines list --state failed --state timed_out --created-after 2d
    pipelines watch nightly-2026-11-26
    pipelines events nightly-2026-11-26 --follow
    pipelines cancel nightly-2026-11-26
    pipelines approve onboarding-42 --comment "score checked"

``--json`` (before or after the command) makes every command print the
gateway's JSON documents, and the streaming ones (``watch``, ``follow``,
``start`` while following, ``events --follow``, ``list --follow``) JSON Lines,
one object per event; errors then go to stderr as
``{"error": {"status", "code", "message"}}``.

The commands that follow a pipeline to its end exit by its outcome, so a
script can branch on it::

    0    succeeded (and every command that did what it was asked)
    1    failed
    2    the command line was wrong, or the gateway refused or could not be reached
    3    awaiting repair: it waits for a person (`pipelines repair` or `pipelines abandon`)
    4    cancelled
    5    timed out
    6    awaiting approval: it waits for a person (`pipelines approve` or `pipelines reject`)
    130  interrupted (Ctrl-C)

It authenticates with the API key in ``PIPELINES_API_KEY``. Without one it
sends the development key, which only a gateway running with
``ENVIRONMENT=development`` and no keys file accepts: the compose stack on a
laptop works with no setup, and any other gateway answers 401.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from httpx_sse import ServerSentEvent

from .. import _wire
from ..client import Client
from ..errors import PipelineError
from . import views

#: Where the gateway listens when run with `docker compose up`.
DEFAULT_GATEWAY = "http://127.0.0.1:8000"

FINAL_STATES = views.FINAL_STATES

#: How much of a result a one-line summary shows; ``--json`` shows it whole.
RESULT_CHARACTERS_SHOWN = 500
#: `follow`'s exit status for a pipeline that stopped to wait for a repair.
AWAITING_REPAIR_EXIT = 3
#: `follow`'s exit status for a pipeline that stopped at an approval gate.
AWAITING_APPROVAL_EXIT = 6
#: The exit status for a command line or gateway error (argparse's own, too).
ERROR_EXIT = 2
#: The exit status for Ctrl-C, as a shell reports SIGINT.
INTERRUPTED_EXIT = 130
#: Exit status by a followed pipeline's outcome; the module docstring's table.
OUTCOME_EXIT = {
    "succeeded": 0,
    "failed": 1,
    "awaiting_repair": AWAITING_REPAIR_EXIT,
    "cancelled": 4,
    "timed_out": 5,
    "awaiting_approval": AWAITING_APPROVAL_EXIT,
}

#: The gateway sends a keepalive comment every 15 s on a stream: three missed
#: ones mean the connection is dead even if the socket has not said so.
STREAM_READ_TIMEOUT = 45.0
#: How long a dropped stream is retried (the gateway restarting, Postgres away) before giving up.
DEFAULT_RECONNECT_SECONDS = 60.0
#: The wait between reconnection attempts, unless the server's `retry:` field says otherwise.
RECONNECT_DELAY = 1.0
#: Answers worth retrying a stream on: the gateway or its database is momentarily away.
RETRYABLE_STATUSES = frozenset({502, 503, 504})


class GatewayError(Exception):
    """The gateway refused, or could not be reached (``status`` None): a client error, as the CLI reports it."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}" if status else message)
        self.status, self.code, self.message = status, code, message

    @classmethod
    def of(cls, error: PipelineError) -> GatewayError:
        return cls(error.status, error.code, error.message)

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUSES

    def as_json(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "code": self.code, "message": self.message}}


class Gateway:
    """The gateway's documents as sent, through :class:`pipeline_client.Client`.

    The CLI prints documents whole (``--json``), so it reads them untyped
    with ``Client.request``; it asks the gateway once and reports what it
    said (no retry after 503 or 429: a person or script at the prompt
    decides), as it always has.
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 15.0) -> None:
        # No key: the client sends the development key, and says so in a 401's message.
        self._client = Client(base_url, api_key, timeout=timeout, max_retry_wait=0)
        self._base_url = base_url

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            body = self._client.request(method, path, **kwargs)
        except PipelineError as exc:
            raise GatewayError.of(exc) from exc
        return body if isinstance(body, dict) else {"message": str(body)}

    def stream(
        self, path: str, params: dict[str, Any], last_event_id: str | None, reconnect_for: float
    ) -> Iterator[ServerSentEvent]:
        """The server-sent events of ``path``, across dropped connections, until the caller stops reading.

        A drop (the gateway restarting, a proxy cutting an idle line, a 503
        while Postgres is away) reconnects with ``Last-Event-ID`` so the server
        resumes after the last event seen; after ``reconnect_for`` seconds
        without an event it gives up. ``Client.open_stream`` makes each
        connection; reconnecting is this loop's.
        """
        delay = RECONNECT_DELAY
        lost_since: float | None = None
        while True:
            try:
                with self._client.open_stream(path, params, last_event_id, STREAM_READ_TIMEOUT) as messages:
                    for event in messages:
                        if event.data:  # an event, not a bare `retry:`: the stream works again
                            lost_since = None
                        last_event_id = event.id or last_event_id
                        if event.retry:
                            delay = event.retry / 1000
                        yield event
                reason = "the gateway closed it"
            except PipelineError as exc:
                error = GatewayError.of(exc)
                if not error.retryable:
                    raise error from exc
                cause = exc.__cause__ if exc.status is None and exc.__cause__ else error
                reason = str(cause) or type(cause).__name__
            now = time.monotonic()
            lost_since = lost_since or now
            if now - lost_since >= reconnect_for:
                raise GatewayError(
                    None,
                    "stream_lost",
                    f"the stream {path} from {self._base_url} dropped ({reason}) and could not be "
                    f"resumed within {reconnect_for:g} s",
                )
            time.sleep(delay)


def _describe(doc: dict[str, Any]) -> str:
    parts = [f"{doc['id']}: {doc['state']}"]
    if doc.get("databricks"):
        parts.append(f"run {doc['databricks']['run_id']} {doc['databricks'].get('run_page_url') or ''}".rstrip())
    if doc.get("error"):
        parts.append(f"{doc['error']['type']}: {doc['error']['message']}")
    if doc["state"] == "succeeded" and doc.get("result") is not None:
        parts.append("result " + _bounded(json.dumps(doc["result"], sort_keys=True, ensure_ascii=False), doc["id"]))
    if doc["state"] == "awaiting_repair":
        parts.append(
            f"awaiting repair until {doc.get('repair_deadline')}: {views.waits_for_a_person(doc['id'], doc['state'])}"
        )
    if doc["state"] == "awaiting_approval":
        gates = [s for s in doc.get("steps") or [] if s.get("state") == "awaiting_approval" and s.get("approval")]
        parts.extend(f"gate {g['name']!r} asks: {g['approval']['message']}" for g in gates)
        parts.append(views.waits_for_a_person(doc["id"], doc["state"]) or "")
    if doc.get("notification") and doc["state"] in FINAL_STATES:
        note = doc["notification"]
        parts.append("email sent" if note["delivered"] else f"email NOT sent: {note.get('error')}")
    return " | ".join(parts)


def _bounded(text: str, pipeline_id: str) -> str:
    """``text`` whole if it is short enough for one line, else its start, an ellipsis and where to read it all."""
    if len(text) <= RESULT_CHARACTERS_SHOWN:
        return text
    return (
        f"{text[:RESULT_CHARACTERS_SHOWN]}… ({len(text)} characters; "
        f"`pipelines status {pipeline_id} --json` shows it whole)"
    )


def follow(
    gateway: Gateway, pipeline_id: str, interval: float, first: dict[str, Any] | None = None, as_json: bool = False
) -> int:
    """Read the status document until the pipeline ends or waits for a repair; print each change."""
    seen: tuple[Any, ...] | None = None
    doc = first or gateway.request("GET", f"/pipelines/{pipeline_id}")
    while True:
        key = (doc["state"], doc.get("databricks"), doc.get("error"))
        if key != seen:
            if as_json:
                views.print_json(doc)
            else:
                print(f"{time.strftime('%H:%M:%S')}  {_describe(doc)}", flush=True)
            seen = key
        # Awaiting a repair or an approval waits for a person, possibly for days: a script is told, not held.
        if doc["state"] in OUTCOME_EXIT:
            return OUTCOME_EXIT[doc["state"]]
        time.sleep(interval)
        doc = gateway.request("GET", f"/pipelines/{pipeline_id}")


def follow_timeline(gateway: Gateway, pipeline_id: str, view: views.TimelineView, reconnect_for: float) -> int:
    """Show a pipeline's timeline, then its new events as they happen, until it ends or awaits a repair.

    The timeline is read first as a document: a 401 or 404 is then a plain
    answer, and a pipeline already over needs no stream. The stream resumes
    after its last event, and an event seen already (a resumption overlapping
    what was shown) is not shown twice.
    """
    timeline = gateway.request("GET", f"/pipelines/{pipeline_id}/events")
    last_seq = 0
    for event in timeline["events"]:
        view.show(event)
        last_seq = max(last_seq, event["seq"])
    view.begin(timeline["state"])
    if timeline["state"] in OUTCOME_EXIT:
        view.end(timeline["state"])
        return OUTCOME_EXIT[timeline["state"]]
    path = f"/pipelines/{pipeline_id}/events"
    for message in gateway.stream(path, {}, str(last_seq) if last_seq else None, reconnect_for):
        if message.event == "end":
            state = message.json()["state"]
            view.end(state)
            return OUTCOME_EXIT.get(state, ERROR_EXIT)
        if message.event != "timeline":
            continue
        event = message.json()
        if event["seq"] <= last_seq:
            continue
        last_seq = event["seq"]
        view.show(event)
        if (waiting := _wire.WAITING_EVENT_STATES.get(event["kind"])) is not None:
            view.end(waiting)
            return OUTCOME_EXIT[waiting]
    raise AssertionError("a followed stream ends only by raising")  # pragma: no cover


# ── the list ─────────────────────────────────────────────────────────────────

#: `--created-after 2d`: an amount of a unit, ago.
_AGO = re.compile(r"(\d+)\s*([smhdw])(?:\s*ago)?")
_AGO_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def instant(text: str) -> str:
    """An instant as RFC 3339 in UTC, from RFC 3339, a date or time (local), or an age like ``2d``."""
    if match := _AGO.fullmatch(text.strip()):
        moment = datetime.now(UTC) - timedelta(**{_AGO_UNITS[match[2]]: int(match[1])})
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a time: give RFC 3339 (2026-12-01T15:00:00Z), a date (2026-12-01, local time) "
                "or an age (30m, 1h, 2d, 1w)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.astimezone()
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def page_size(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 200:
        raise argparse.ArgumentTypeError(f"--limit takes 1 to 200, got {text!r}")
    return int(text)


def _list_filters(args: argparse.Namespace) -> dict[str, Any]:
    filters = {
        "state": args.state or None,
        "job": args.job,
        "created_after": args.created_after,
        "created_before": args.created_before,
    }
    return {name: value for name, value in filters.items() if value is not None}


def list_pages(gateway: Gateway, filters: dict[str, Any], limit: int, cursor: str | None, every: bool) -> dict:
    """One page, or with ``every`` all of them merged into one (``next_cursor`` null)."""

    def read(cursor: str | None) -> dict[str, Any]:
        params = {**filters, "limit": limit} | ({"cursor": cursor} if cursor else {})
        return gateway.request("GET", "/pipelines", params=params)

    page = read(cursor)
    if not every:
        return page
    items, seen_cursors = list(page["items"]), {cursor}
    while page["next_cursor"] is not None:
        # A gateway that hands back a cursor it gave before would keep this reading forever.
        if page["next_cursor"] in seen_cursors:
            raise GatewayError(None, "cursor_loop", f"the gateway sent cursor {page['next_cursor']!r} twice")
        seen_cursors.add(page["next_cursor"])
        page = read(page["next_cursor"])
        items.extend(page["items"])
    return {"items": items, "next_cursor": None, "total": page["total"]}


def follow_list(
    gateway: Gateway,
    filters: dict[str, Any],
    view: views.PipelineListView,
    reconnect_for: float,
    after: str | None = None,
) -> int:
    for message in gateway.stream("/pipelines", filters, after, reconnect_for):
        if message.event == "pipeline":
            view.show(message.id or None, message.json())
    raise AssertionError("a followed stream ends only by raising")  # pragma: no cover


# ── the command line ─────────────────────────────────────────────────────────


def _parameters(pairs: list[str]) -> dict[str, str]:
    parameters = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--param takes NAME=VALUE, got {pair!r}")
        parameters[name] = value
    return parameters


def _describe_job(job: dict[str, Any]) -> str:
    """A job or pipeline and its parameters, as `pipelines jobs` prints them."""
    marker = " (default)" if job["default"] else ""
    lines = [f"{job['name']}{marker}: {job['title']}; completes by {job['completion']}", f"  {job['description']}"]
    if job.get("kind") == "pipeline":
        version = f" (version {job['version']})" if job.get("version") is not None else ""
        lines.append(f"  a pipeline{version} of the jobs {', '.join(job.get('jobs') or [])}")
    if job.get("schedule"):
        lines.append(f"  starts by itself on the schedule {job['schedule']} (UTC)")
    for parameter in job["parameters"]:
        rule = "required" if parameter["required"] else f"default {parameter['default']!r}"
        if parameter["allowed"]:
            rule += f"; one of {', '.join(parameter['allowed'])}"
        elif parameter["pattern"]:
            rule += f"; matches {parameter['pattern']}"
        lines.append(f"  --param {parameter['name']}=...  {parameter['description']} ({rule})")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are JSON on stderr when ``--json`` is on the command line."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            print(json.dumps({"error": {"status": None, "code": "usage", "message": message}}), file=sys.stderr)
            raise SystemExit(ERROR_EXIT)
        super().error(message)


def _parser() -> argparse.ArgumentParser:
    # `--json` and `--reconnect-for` are accepted before the command and after
    # it: the subcommands' copies default to SUPPRESS so they never overwrite a
    # value given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON (Lines)")
    streaming = argparse.ArgumentParser(add_help=False)
    streaming.add_argument(
        "--reconnect-for",
        type=float,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help=f"how long to retry a dropped stream before exiting 2 (default {DEFAULT_RECONNECT_SECONDS:g})",
    )
    exits = __doc__.split("script can branch on it::\n\n")[1].split("\n\n")[0]
    parser = _Parser(
        prog="pipelines",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status:\n" + exits + "\n\nenvironment: PIPELINES_GATEWAY (the gateway's URL), PIPELINES_API_KEY "
        "(an API key of that gateway;\n  without one the development key is sent), NO_COLOR (no colour).",
    )
    parser.add_argument(
        "--gateway", default=os.environ.get("PIPELINES_GATEWAY", DEFAULT_GATEWAY), help="gateway base URL"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between status reads while following")
    parser.add_argument("--json", action="store_true", default=False, help="print JSON; JSON Lines when streaming")
    parser.add_argument(
        "--reconnect-for", type=float, default=DEFAULT_RECONNECT_SECONDS, metavar="SECONDS", help=argparse.SUPPRESS
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help_text: str, *, streams: bool = False) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[common, streaming] if streams else [common])

    start = command("start", "start a pipeline and follow it")
    start.add_argument("--job", help="the catalogue job to run (see `pipelines jobs`; default: the default job)")
    start.add_argument("--email", required=True)
    start.add_argument("--id", help="your pipeline id (default: generated)")
    start.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    start.add_argument("--timeout", type=int, help="seconds to wait for Databricks")
    start.add_argument("--no-follow", action="store_true", help="print the pipeline and return at once")
    command("jobs", "list the catalogue's jobs you may start, with their parameters")
    listing = command("list", "list pipelines, newest first", streams=True)
    listing.add_argument("--state", action="append", default=[], help="only in this state (repeatable)")
    listing.add_argument("--job", help="only of this catalogue job")
    listing.add_argument("--created-after", type=instant, metavar="TIME", help="RFC 3339, a date, or an age: 2d")
    listing.add_argument("--created-before", type=instant, metavar="TIME", help="RFC 3339, a date, or an age: 2d")
    listing.add_argument("--limit", type=page_size, default=50, help="pipelines per page, 1 to 200 (default 50)")
    listing.add_argument("--cursor", help="the page after this cursor (a previous page's next_cursor)")
    listing.add_argument("--all", action="store_true", help="every page, to the end")
    listing.add_argument("--follow", action="store_true", help="then keep showing changes as they happen")
    events = command("events", "print a pipeline's timeline", streams=True)
    events.add_argument("id")
    events.add_argument("--follow", action="store_true", help="then print new events until the pipeline ends")
    command("watch", "watch a pipeline live until it ends", streams=True).add_argument("id")
    step_help = "the job step (its id or name) when several await repair"
    repair = command("repair", "repair a pipeline awaiting repair: rerun its run's failed tasks")
    repair.add_argument("id")
    repair.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a parameter to change")
    repair.add_argument("--step", help=step_help)
    abandon = command("abandon", "abandon a pipeline awaiting repair: it ends failed")
    abandon.add_argument("id")
    abandon.add_argument("--step", help=step_help)
    for name, help_text in (
        ("approve", "approve a pipeline's open approval gate: it carries on"),
        ("reject", "reject a pipeline's open approval gate: its code decides what follows"),
    ):
        gate = command(name, help_text)
        gate.add_argument("id")
        gate.add_argument("--gate", help="the gate (its name or step id) when several are open")
        gate.add_argument("--comment", default="", help="why, for the record (up to 2000 characters)")
    commands.add_parser(
        "status", aliases=["show"], help="print where a pipeline stands, and its steps", parents=[common]
    ).add_argument("id")
    for name, help_text in (
        ("follow", "follow a pipeline until it finishes"),
        ("cancel", "cancel a pipeline and its Databricks run"),
    ):
        command(name, help_text).add_argument("id")
    return parser


def _print_document(as_json: bool, doc: dict[str, Any], no_color: bool = True) -> int:
    """The document (as JSON, or on one line), then its steps when it has several."""
    print(json.dumps(doc, ensure_ascii=False) if as_json else _describe(doc), flush=True)
    if not as_json:
        views.print_steps(views.terminal_console(no_color), doc)
    return 0


def _run(args: argparse.Namespace, gateway: Gateway) -> int:
    as_json: bool = args.json
    no_color = as_json or bool(os.environ.get("NO_COLOR"))
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
            return _print_document(as_json, doc)
        return follow(gateway, doc["id"], args.interval, doc, as_json)
    if args.command == "jobs":
        jobs = gateway.request("GET", "/jobs")
        print(json.dumps(jobs) if as_json else "\n".join(_describe_job(job) for job in jobs["jobs"]))
        return 0
    if args.command == "list":
        filters = _list_filters(args)
        if args.follow:
            if as_json:
                return follow_list(gateway, filters, views.PipelineListJsonLines(), args.reconnect_for)
            if not sys.stdout.isatty():
                return follow_list(gateway, filters, views.PipelineListLines(), args.reconnect_for)
            first = gateway.request("GET", "/pipelines", params={**filters, "limit": args.limit})
            # The stream picks up where the page was read, so no change in between is missed.
            after = str(first.get("stream_position", 0))
            with views.LivePipelineList(views.terminal_console(no_color), first["items"]) as live:
                return follow_list(gateway, filters, live, args.reconnect_for, after)
        page = list_pages(gateway, filters, args.limit, args.cursor, args.all)
        if as_json:
            views.print_json(page)
        else:
            views.print_pipeline_page(views.terminal_console(no_color), page)
        return 0
    if args.command == "events" and not args.follow:
        timeline = gateway.request("GET", f"/pipelines/{args.id}/events")
        if as_json:
            views.print_json(timeline)
            return 0
        plain = views.TimelineLines(args.id)
        for event in timeline["events"]:
            plain.show(event)
        plain.end(timeline["state"])
        return 0
    if args.command in ("events", "watch"):
        if as_json:
            return follow_timeline(gateway, args.id, views.TimelineJsonLines(args.id), args.reconnect_for)
        if args.command == "events":
            return follow_timeline(gateway, args.id, views.TimelineLines(args.id), args.reconnect_for)
        if not sys.stdout.isatty():
            exit_status = follow_timeline(gateway, args.id, views.TimelineLines(args.id), args.reconnect_for)
        else:
            with views.LiveTimeline(views.terminal_console(no_color), args.id) as live:
                exit_status = follow_timeline(gateway, args.id, live, args.reconnect_for)
        # The timeline tells what happened; the steps, where each part of a pipeline of several stands.
        views.print_steps(views.terminal_console(no_color), gateway.request("GET", f"/pipelines/{args.id}"))
        return exit_status
    if args.command == "repair":
        body = _wire.repair_body(_parameters(args.param), args.step)
        return _print_document(as_json, gateway.request("POST", f"/pipelines/{args.id}/repair", json=body), no_color)
    if args.command == "abandon":
        doc = gateway.request("POST", f"/pipelines/{args.id}/abandon", json=_wire.abandon_body(args.step))
        return _print_document(as_json, doc, no_color)
    if args.command in ("approve", "reject"):
        body = _wire.approval_body(args.gate, args.comment)
        return _print_document(
            as_json, gateway.request("POST", f"/pipelines/{args.id}/{args.command}", json=body), no_color
        )
    if args.command in ("status", "show"):
        return _print_document(as_json, gateway.request("GET", f"/pipelines/{args.id}"), no_color)
    if args.command == "follow":
        return follow(gateway, args.id, args.interval, as_json=as_json)
    return _print_document(as_json, gateway.request("POST", f"/pipelines/{args.id}/cancel"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _Parser.json_errors = "--json" in argv
    args = _parser().parse_args(argv)
    gateway = Gateway(args.gateway, os.environ.get("PIPELINES_API_KEY") or None)
    try:
        return _run(args, gateway)
    except GatewayError as exc:
        if args.json:
            print(json.dumps(exc.as_json()), file=sys.stderr)
        else:
            print(f"error: {exc}", file=sys.stderr)
        return ERROR_EXIT
    except KeyboardInterrupt:
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
