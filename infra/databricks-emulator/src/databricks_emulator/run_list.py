"""``jobs/runs/list``: the workspace's job runs, newest start first, filtered, paged by token.

Why a client wants it: one listing of the active runs (``active_only``) tells
a service which of the runs it waits on are still going, for one call per 25
runs, instead of one ``runs/get`` per run it waits on.

Which runs are active: a job run whose life cycle is not terminal (TERMINATED,
SKIPPED, INTERNAL_ERROR), so QUEUED, PENDING, RUNNING or TERMINATING, the
states databricks-sdk's ``list_runs`` documents for ``active_only`` (older
references omit QUEUED: queued runs are active here, since they have not
ended). BLOCKED and WAITING_FOR_RETRY are states of task runs, which the
listing never shows. A repaired run is active again from its repair until it
ends; ``completed_only`` lists the rest.

Paging is by position in the newest-first order, not by offset: a token names
the run that ends (``next_page_token``) or starts (``prev_page_token``) the page
it came with, and the filters it was issued for. So a run that ends between two
pages of an ``active_only`` listing never pushes a still-active one off the
next page, as an offset would. A real workspace's tokens are opaque; a client
must not depend on either behaviour, but an emulator that skipped runs would
hide a client's bug behind its own. A token used with other filters, one that
names no run, or one not made here is refused with 400 naming ``page_token``.
The deprecated ``offset`` is accepted for the first page; once a token is given
it decides, as databricks-sdk sends the first call's ``offset`` again with every
token.

Cost: the workspace keeps its runs sorted (``Workspace.runs_newest_first``) and
a page walks from its token's run only as far as it needs, so listing 10,000
active runs (400 pages) takes tens of milliseconds of the emulator's CPU, not
a pass over every run per page: the emulator shares the machine with the
benchmark that measures a watchdog's sweep.
"""

from __future__ import annotations

import json
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from itertools import islice
from typing import Any, Final

from databricks_emulator.errors import invalid_parameter
from databricks_emulator.pages import encode_token, page, read_token, whole_under_2_1
from databricks_emulator.runs import PAGED_RUN_ARRAYS, JobRun
from databricks_emulator.workspace import Workspace

#: The most runs one page may hold; the reference's maximum (a limit of 0 means it).
MAX_RUNS_LIMIT: Final = 25
DEFAULT_RUNS_LIMIT: Final = 20
#: Every run here is started by run-now, so every run is a JOB_RUN; the other
#: values the reference defines select nothing. An unknown value is ignored, as
#: the real API ignores an enum value it does not know (see the README).
RUN_TYPES: Final = frozenset({"JOB_RUN", "WORKFLOW_RUN", "SUBMIT_RUN"})
#: Token kinds: the page after the named run, or the page before it.
AFTER, BEFORE = "runs-after", "runs-before"


@dataclass(frozen=True)
class RunFilter:
    """Which runs a listing shows; a page token is valid only for the filter it was issued for."""

    active_only: bool
    completed_only: bool
    job_id: int | None
    start_time_from: int | None
    start_time_to: int | None
    run_type: str | None

    def admits(self, run: JobRun) -> bool:
        return (
            (not self.active_only or not run.is_terminal)
            and (not self.completed_only or run.is_terminal)
            and (self.job_id is None or run.job.job_id == self.job_id)
            and (self.start_time_from is None or run.start_time >= self.start_time_from)
            and (self.start_time_to is None or run.start_time <= self.start_time_to)
            and self.run_type in (None, "JOB_RUN")
        )

    def fingerprint(self) -> int:
        """A number naming this filter in page tokens (not a secret: it only keeps tokens apart)."""
        return zlib.crc32(json.dumps(astuple(self)).encode())


def read_filter(workspace: Workspace, call: dict[str, Any]) -> RunFilter:
    """The listing's filter from the call, each bad value refused naming its parameter."""
    active_only, completed_only = call.get("active_only", False), call.get("completed_only", False)
    if active_only and completed_only:
        raise invalid_parameter("active_only and completed_only cannot both be true: give one of them, or neither.")
    job_id = call.get("job_id")
    if job_id is not None:
        workspace.job(job_id)  # an unknown job is the real 400 "Job N does not exist."
    for name in ("start_time_from", "start_time_to"):
        if call.get(name, 0) < 0:
            raise invalid_parameter(f"{name} must be a time in epoch milliseconds, not negative; got {call[name]}.")
    run_type = call.get("run_type")
    return RunFilter(
        active_only=active_only,
        completed_only=completed_only,
        job_id=job_id,
        start_time_from=call.get("start_time_from"),
        start_time_to=call.get("start_time_to"),
        run_type=run_type if run_type in RUN_TYPES else None,
    )


def read_limit(call: dict[str, Any]) -> int:
    """Runs per page: 1 to 25, 20 when not given, 25 when 0 (as the reference says of 0)."""
    limit = call.get("limit", DEFAULT_RUNS_LIMIT)
    if not 0 <= limit <= MAX_RUNS_LIMIT:
        raise invalid_parameter(
            f"limit must be between 1 and {MAX_RUNS_LIMIT} (0 means {MAX_RUNS_LIMIT}); got {limit}."
        )
    return limit or MAX_RUNS_LIMIT


def _chosen(
    workspace: Workspace, call: dict[str, Any], runs_filter: RunFilter, newest_first: list[JobRun]
) -> list[int]:
    """The positions in ``newest_first`` of the runs on this call's page, newest first.

    Each page walks from its token's run (or the start) only as far as it
    needs, so listing a workspace of many runs costs each page about its own
    runs, not a pass over every run.
    """
    limit = read_limit(call)
    token = call.get("page_token")
    if not token:
        offset = call.get("offset", 0)
        if offset < 0:
            raise invalid_parameter(f"offset must not be negative; got {offset}.")
        return list(islice(_admitted(runs_filter, newest_first, 0, 1), offset, offset + limit))
    kind, run_id = read_token(token, (AFTER, BEFORE), runs_filter.fingerprint())
    cursor = workspace.runs.get(run_id)
    if cursor is None:
        raise invalid_parameter(f"Invalid page_token: {token!r} names no run of this workspace.")
    if kind == AFTER:
        after = bisect_right(newest_first, workspace.order_key(cursor), key=workspace.order_key)
        return list(islice(_admitted(runs_filter, newest_first, after, 1), limit))
    before = bisect_left(newest_first, workspace.order_key(cursor), key=workspace.order_key) - 1
    return list(islice(_admitted(runs_filter, newest_first, before, -1), limit))[::-1]


def _admitted(runs_filter: RunFilter, newest_first: list[JobRun], start: int, step: int) -> Iterator[int]:
    """Positions of the runs the filter admits, from ``start`` towards older (step 1) or newer (-1) runs."""
    position = start
    while 0 <= position < len(newest_first):
        if runs_filter.admits(newest_first[position]):
            yield position
        position += step


def _entry(run: JobRun, *, expand_tasks: bool, version: str) -> dict[str, Any]:
    """A run as the listing shows it (a ``BaseRun``): tasks only when asked for, at most 100 under 2.2."""
    entry = run.job_run_json(include_history=False)
    if not expand_tasks:
        del entry["tasks"]
    elif version == "2.2":
        entry, more = page(entry, PAGED_RUN_ARRAYS, 0)
        if more:
            entry["has_more"] = True
    else:
        whole_under_2_1(entry["tasks"], "runs/list with expand_tasks of a job run", version)
    return entry


def list_runs(workspace: Workspace, call: dict[str, Any], version: str) -> dict[str, Any]:
    """The answer to ``runs/list``: ``runs``, the page tokens, and ``has_more`` before 2.2."""
    runs_filter = read_filter(workspace, call)
    newest_first = workspace.runs_newest_first()
    chosen = _chosen(workspace, call, runs_filter, newest_first)
    # Whether any run the filter admits lies beyond each end of the page.
    older = bool(chosen) and next(_admitted(runs_filter, newest_first, chosen[-1] + 1, 1), None) is not None
    newer = bool(chosen) and next(_admitted(runs_filter, newest_first, chosen[0] - 1, -1), None) is not None
    expand = call.get("expand_tasks", False)
    answer: dict[str, Any] = {}
    if chosen:
        answer["runs"] = [_entry(newest_first[position], expand_tasks=expand, version=version) for position in chosen]
    if version != "2.2":
        # Jobs API 2.2 dropped the top-level has_more for the page tokens, as for jobs/list.
        answer["has_more"] = older
    fingerprint = runs_filter.fingerprint()
    if older:
        answer["next_page_token"] = encode_token(AFTER, fingerprint, newest_first[chosen[-1]].run_id)
    if newer:
        answer["prev_page_token"] = encode_token(BEFORE, fingerprint, newest_first[chosen[0]].run_id)
    return answer
