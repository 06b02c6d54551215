"""The protocol state machine: the SDK's reference model, corrected to the server.

:class:`StandInState` subclasses ``resonate.connections.local.ServerState``,
the in-memory model of the Resonate server that ships with the Python SDK, and
keeps its interface: ``apply(now_ms, flat_request) -> flat_response``,
``tick(now_ms)`` and the ``outgoing`` list of ``OutgoingMessage``. It keeps its
records too (``DurablePromise``, ``Task``) and the meaning of every
transition. Where the model and the real server (resonatehq/resonate
``src/server.rs`` and its reference model ``src/oracle.rs``) disagree, the
server wins, and the override says so. The list of those disagreements, and
what was done about each, is in this package's README.

It must not know about HTTP, SSE, auth or delivery: it decides what a request
does and which messages that produces, and hands the messages over in
``outgoing``. :mod:`resonate_dev.app` owns the rest.

Flat responses carry ``kind``, ``corrId``, ``status`` and either the response
``data`` fields or, for a status of 400 and above, an ``error`` string, which
:mod:`resonate_dev.wire` turns into the string ``data`` the server sends.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from croniter import croniter
from resonate.connections.local import (
    DurablePromise,
    OutgoingMessage,
    ServerState,
    Task,
)

from resonate_dev import protocol
from resonate_dev.deadlines import DeadlineQueue
from resonate_dev.protocol import InvalidRequest, Refused, WireValue

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

logger = logging.getLogger(__name__)

#: How long a pending task waits for an acquire before its execute message is
#: sent again, in ms. The real server's ``tasks.retry_timeout`` default.
DEFAULT_RETRY_TIMEOUT_MS = 30_000

#: Kinds of task deadline, numbered as the server's snapshot numbers them.
RETRY, LEASE = 0, 1

#: The ``debug.*`` operations exist on the real server only in debug mode,
#: which the stand-in has no equivalent of (its clock is always the wall).
DEBUG_KINDS = frozenset({"debug.start", "debug.stop", "debug.reset", "debug.snap", "debug.tick"})

#: A URI scheme followed by something: the real server accepts any address
#: ``url::Url::parse`` accepts, which this approximates.
_ADDRESS = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:.+$")

type Flat = dict[str, Any]


def is_valid_address(address: str) -> bool:
    """Whether the real server would admit ``address`` as a target or listener."""
    return bool(_ADDRESS.match(address)) and not any(c.isspace() for c in address)


def _ok(kind: str, corr_id: Any, status: int = 200, **data: Any) -> Flat:
    return {"kind": kind, "corrId": corr_id, "status": status, **data}


def _error(kind: str, corr_id: Any, status: int, message: str) -> Flat:
    return {"kind": kind, "corrId": corr_id, "status": status, "error": message}


class StandInState(ServerState):
    """The SDK's ``ServerState``, answering as the real server answers."""

    def __init__(
        self,
        *,
        server_url: str = "",
        retry_timeout_ms: int = DEFAULT_RETRY_TIMEOUT_MS,
    ) -> None:
        super().__init__()
        #: Stamped into every execute message's head, as the server does.
        self.server_url = server_url
        self.retry_timeout_ms = retry_timeout_ms
        # Replaces the model's lists: see resonate_dev.deadlines for why.
        self.p_timeouts: DeadlineQueue = DeadlineQueue()  # type: ignore[assignment]
        self.t_timeouts: DeadlineQueue = DeadlineQueue()  # type: ignore[assignment]
        self.s_timeouts = DeadlineQueue()
        self.schedule_runs: dict[str, int] = {}
        # Indexes the model answers by scanning every promise.
        #: task id -> ids of the promises whose awaiters include it.
        self._awaiting: defaultdict[str, set[str]] = defaultdict(set)
        #: resonate:branch -> ids of the promises carrying it.
        self._branches: defaultdict[str, set[str]] = defaultdict(set)
        #: The execute messages queued in the current ``outgoing`` batch, by task.
        self._batch: list[OutgoingMessage] = self.outgoing
        self._batch_executes: dict[str, OutgoingMessage] = {}
        self._handlers: dict[str, Callable[[int, Any, Flat], Flat]] = {
            "promise.get": self.promise_get_at,
            "promise.create": self.promise_create,
            "promise.settle": self.promise_settle,
            "promise.register_callback": self.promise_register_callback,
            "promise.register_listener": self.promise_register_listener_at,
            "promise.search": self.promise_search,
            "task.get": self.task_get,
            "task.create": self.task_create,
            "task.acquire": self.task_acquire,
            "task.release": self.task_release,
            "task.fulfill": self.task_fulfill,
            "task.suspend": self.task_suspend,
            "task.fence": self.task_fence,
            "task.heartbeat": self.task_heartbeat,
            "task.halt": self.task_halt,
            "task.continue": self.task_continue,
            "task.search": self.task_search,
            "schedule.get": self.schedule_get_at,
            "schedule.create": self.schedule_create,
            "schedule.delete": self.schedule_delete_at,
            "schedule.search": self.schedule_search_at,
        }

    # =========================================================================
    # ENTRY POINTS
    # =========================================================================

    def apply(self, now: int, req: Any) -> Flat:
        """Apply one flat request (``data`` fields plus ``kind`` and ``corrId``).

        Unlike the model, which raises on an unknown kind and on some missing
        fields, every outcome is a response, as on the wire.
        """
        self.outgoing = []
        kind = req.get("kind") if isinstance(req, dict) else None
        corr_id = req.get("corrId") if isinstance(req, dict) else None
        if not isinstance(kind, str):
            return _error("unknown", corr_id, 400, "Missing or invalid 'kind' field")
        if kind in DEBUG_KINDS:
            return _error(kind, corr_id, 403, "Debug operations are disabled")
        handler = self._handlers.get(kind)
        if handler is None:
            return _error(kind, corr_id, 400, f"Unknown operation: {kind}")
        try:
            return handler(now, corr_id, req)
        except Refused as exc:
            return _error(kind, corr_id, exc.status, exc.message)

    def tick(self, now: int) -> None:
        """Fire every promise, task and schedule deadline due at ``now``.

        The same phases as the model (and as the server's ``debug.tick``):
        settle expired promises, then release expired leases, then resend
        execute messages for tasks still pending, then fire schedules. Only
        the ids that are due are visited.
        """
        expired = [
            pid
            for pid, _ in self.p_timeouts.pop_due(now)
            if (p := self.promises.get(pid)) is not None and p.state == "pending"
        ]
        due_tasks = self.t_timeouts.pop_due(now)
        for pid in expired:
            p = self.promises[pid]
            p.state = self.timeout_state(p.tags)
            p.settled_at = p.timeout_at
        for pid in expired:
            self.settle_effects(pid, now)
        for tid, deadline in due_tasks:
            t = self.tasks.get(tid)
            if t is None:
                continue
            # A deadline's kind always matches its task's state (every
            # transition re-arms or disarms it), so nothing else is due here.
            if deadline.kind == LEASE and t.state == "acquired":
                t.state = "pending"
                t.pid = None
                t.ttl = None
                self._arm_retry(tid, now)
                self._execute_if_targeted(tid, t.version)
            elif deadline.kind == RETRY and t.state == "pending":
                self._arm_retry(tid, now)
                self._execute_if_targeted(tid, t.version)
        self._fire_schedules(now)

    # =========================================================================
    # PROMISES
    # =========================================================================

    def promise_get_at(self, now: int, corr_id: Any, req: Flat) -> Flat:
        r = protocol.parse(protocol.PromiseGetData, req)
        p = self._promise_at(now, r.id)
        return _ok("promise.get", corr_id, promise=self.promise_record(p, now))

    def promise_create(self, now: int, corr_id: Any, req: Flat) -> Flat:
        r = protocol.parse(protocol.PromiseCreateData, req)
        self._check_target(r.tags)
        self.try_auto_timeout(now, r.id)
        return _ok("promise.create", corr_id, promise=self._create_or_get(now, r))

    def _create_or_get(self, now: int, r: protocol.PromiseCreateData) -> Flat:
        """Create the promise ``r`` describes, or return the one that exists.

        Divergence fixed: the model arms a timeout only for promises carrying
        ``resonate:target``, so a bare ``ctx.promise(timeout=...)`` never timed
        out. The server (``op_promise_create``) arms one for every promise
        created pending.
        """
        existing = self.promises.get(r.id)
        if existing is not None:
            return self.promise_record(existing, now)
        p = self._new_promise(now, r)
        address = r.tags.get("resonate:target")
        if address is None:
            return self.promise_record(p, now)
        if p.state != "pending":
            self.tasks[r.id] = self._new_task(r.id, "fulfilled")
            return self.promise_record(p, now)
        self.tasks[r.id] = self._new_task(r.id, "pending")
        delay = r.tags.get("resonate:delay")
        if delay is not None and now < int(delay):
            # Deferred: the first execute goes out when the retry deadline fires.
            self.t_timeouts.arm(r.id, int(delay), RETRY)
        else:
            self._arm_retry(r.id, now)
            self.send_execute_message(address, r.id, 0)
        return self.promise_record(p, now)

    def promise_settle(self, now: int, corr_id: Any, req: Flat) -> Flat:
        r = protocol.parse(protocol.PromiseSettleData, req)
        p = self._promise_at(now, r.id)
        if p.state == "pending":
            self._settle(p, r.state, r.value, now)
        return _ok("promise.settle", corr_id, promise=self.promise_record(p, now))

    def promise_register_callback(self, now: int, corr_id: Any, req: Flat) -> Flat:
        """Make the awaiter's task resume when the awaited promise settles.

        Missing from the model; semantics from ``op_promise_register_callback``.
        """
        r = protocol.parse(protocol.PromiseRegisterCallbackData, req)
        self.try_auto_timeout(now, r.awaiter)
        awaited = self._promise_at(now, r.awaited, missing="Awaited promise not found")
        awaiter = self._promise_at(now, r.awaiter, status=422, missing="Awaiter promise not found")
        if "resonate:target" not in awaiter.tags:
            raise Refused(422, "Awaiter promise has no resonate:target tag")
        if awaiter.state == "pending":
            task = self.tasks.get(r.awaiter)
            if awaited.state == "pending":
                self._await(r.awaiter, awaited)
            elif task is not None and task.state == "suspended":
                task.state = "pending"
                self._arm_retry(r.awaiter, now)
                self._execute_if_targeted(r.awaiter, task.version)
            elif task is not None and task.state in ("pending", "acquired"):
                task.resumes.add(r.awaited)
        return _ok("promise.register_callback", corr_id, promise=self.promise_record(awaited, now))

    def promise_register_listener_at(self, now: int, corr_id: Any, req: Flat) -> Flat:
        r = protocol.parse(protocol.PromiseRegisterListenerData, req)
        if not is_valid_address(r.address):
            raise Refused(400, "Invalid listener address")
        p = self._promise_at(now, r.awaited, missing="Awaited promise not found")
        if p.state == "pending":
            p.subscribers.add(r.address)
        return _ok("promise.register_listener", corr_id, promise=self.promise_record(p, now))

    def promise_search(self, now: int, corr_id: Any, req: Flat) -> Flat:
        """Page through promises by state and tags, ordered by id (missing from the model)."""
        r = protocol.parse(protocol.PromiseSearchData, req)
        wanted = r.tags or {}
        found = (
            p
            for p in self.promises.values()
            if (r.state is None or p.state == r.state)
            and all(p.tags.get(k) == v for k, v in wanted.items())
        )
        return self._search("promise.search", corr_id, "promises", found, r, self.promise_record)

    # =========================================================================
    # TASKS
    # =========================================================================

    def task_get(self, now: int, corr_id: Any, req: Flat) -> Flat:
        """A task as it stands now (missing from the model)."""
        r = protocol.parse(protocol.TaskIdData, req)
        t = self._task_at(now, r.id)
        p = self.promises.get(r.id)
        settled = p is not None and (p.state != "pending" or now >= p.timeout_at)
        record = self.task_record(t)
        if settled or t.state == "fulfilled":
            record["state"] = "fulfilled"
            record.pop("ttl", None)
            record.pop("pid", None)
        return _ok("task.get", corr_id, task=record)

    def task_create(self, now: int, corr_id: Any, req: Flat) -> Flat:
        """Create a promise and acquire its task in one step.

        Divergences fixed: the server starts an acquired task at version 1 and
        bumps the version on every acquire (the model bumped it on release);
        it refuses an action without ``resonate:target`` (400) and a promise
        that exists without a task (422, not 409).
        """
        r = protocol.parse(protocol.TaskCreateData, req)
        action = r.action.data
        self._check_target(action.tags)
        self.try_auto_timeout(now, action.id)
        t = self.tasks.get(action.id)
        if t is not None:
            p = self.promises[action.id]
            if t.state == "pending" and p.state == "pending":
                self._acquire(t, r.pid, r.ttl, now)
            elif t.state != "fulfilled" and p.state == "pending":
                raise Refused(409, "Already exists")
            return self._claimed("task.create", corr_id, t, p, now)
        if action.id in self.promises:
            raise Refused(422, "Promise exists without a target task")
        p = self._new_promise(now, action)
        if p.state != "pending":
            t = self._new_task(action.id, "fulfilled")
        else:
            t = self._new_task(action.id, "acquired", version=1, pid=r.pid, ttl=r.ttl)
            self.t_timeouts.arm(action.id, now + r.ttl, LEASE)
        self.tasks[action.id] = t
        return self._claimed("task.create", corr_id, t, p, now)

    def task_acquire(self, now: int, corr_id: Any, req: Flat) -> Flat:
        """Claim a pending task at the version its execute message named.

        Divergence fixed: the model ignored the requested version.
        """
        r = protocol.parse(protocol.TaskAcquireData, req)
        t = self._task_at(now, r.id)
        p = self.promises[r.id]
        if t.state != "pending" or p.state != "pending":
            raise Refused(409, "Task is not pending")
        if t.version != r.version:
            raise Refused(409, "Version mismatch")
        self._acquire(t, r.pid, r.ttl, now)
        return self._claimed("task.acquire", corr_id, t, p, now)

    def task_release(self, now: int, corr_id: Any, req: Flat) -> Flat:
        r = protocol.parse(protocol.TaskReleaseData, req)
        t = self._held(self._task_at(now, r.id), r.version)
        t.state = "pending"
        t.pid = None
        t.ttl = None
        self._arm_retry(r.id, now)
        self._execute_if_targeted(r.id, t.version)
        return _ok("task.release", corr_id)

    def task_fulfill(self, now: int, corr_id: Any, req: Flat) -> Flat:
        r = protocol.parse(protocol.TaskFulfillData, req)
        settle = r.action.data
        self._held(self._task_at(now, r.id), r.version)
        p = self._promise_at(now, settle.id)
        if p.state == "pending":
            self._settle(p, settle.state, settle.value, now)
        else:
            self.enqueue_settle(r.id)
        return _ok("task.fulfill", corr_id, promise=self.promise_record(p, now))

    def task_suspend(self, now: int, corr_id: Any, req: Flat) -> Flat:
        """Suspend a task on the promises it awaits, or redirect (300).

        Divergences fixed: the model ignored the version and skipped awaited
        promises that do not exist, suspending forever; the server answers
        409 and 422.
        """
        r = protocol.parse(protocol.TaskSuspendData, req)
        awaited_ids = list(dict.fromkeys(a.data.awaited for a in r.actions))
        for awaited_id in awaited_ids:
            self.try_auto_timeout(now, awaited_id)
        t = self._task_at(now, r.id)
        self._held(t, r.version, "Task is not acquired or version mismatch")
        awaited = [
            self._promise_at(now, i, status=422, missing="Awaited promise not found")
            for i in awaited_ids
        ]
        if any(p.state != "pending" for p in awaited):
            t.resumes.clear()
            return _ok("task.suspend", corr_id, 300, preload=self.preload(r.id))
        for p in awaited:
            self._await(r.id, p)
        t.state = "suspended"
        t.pid = None
        t.ttl = None
        t.resumes.clear()
        self.t_timeouts.disarm(r.id)
        return _ok("task.suspend", corr_id)

    def task_fence(self, now: int, corr_id: Any, req: Flat) -> Flat:
        """Create or settle a promise only while the task holds its lease.

        Divergence fixed: the model answered ``action: {"data": {...}}``; the
        server answers with the full nested response envelope.
        """
        r = protocol.parse(protocol.TaskFenceData, req)
        action_id = r.action.data.get("id")
        if isinstance(action_id, str):
            self.try_auto_timeout(now, action_id)
        self._held(self._task_at(now, r.id), r.version, "Version mismatch")
        record: Flat | None
        if r.action.kind == "promise.create":
            create = protocol.parse(protocol.PromiseCreateData, r.action.data, what="action data")
            self._check_target(create.tags)
            record = self._create_or_get(now, create)
        elif r.action.kind == "promise.settle":
            settle = protocol.parse(protocol.PromiseSettleData, r.action.data, what="action data")
            p = self.promises.get(settle.id)
            if p is not None and p.state == "pending":
                self._settle(p, settle.state, settle.value, now)
            record = self.promise_record(p, now) if p is not None else None
        else:
            raise Refused(400, "Invalid fence action kind")
        inner = {
            "kind": r.action.kind,
            "head": {
                "corrId": corr_id,
                "status": 200 if record is not None else 404,
                "version": protocol.PROTOCOL_VERSION,
            },
            "data": {"promise": record} if record is not None else "Promise not found",
        }
        return _ok("task.fence", corr_id, action=inner, preload=self.preload(r.id))

    def task_heartbeat(self, now: int, corr_id: Any, req: Flat) -> Flat:
        """Extend the leases a process holds.

        Kept deliberately lenient in one respect: the server's request type
        rejects a heartbeat naming tasks of different lineages, but the Python
        SDK sends one heartbeat for every task its process holds, so the
        stand-in accepts it (see the README).
        """
        r = protocol.parse(protocol.TaskHeartbeatData, req)
        for ref in r.tasks:
            t = self.tasks.get(ref.id)
            p = self.promises.get(ref.id)
            if (
                t is not None
                and t.state == "acquired"
                and t.version == ref.version
                and t.pid == r.pid
                and t.ttl is not None
                and p is not None
                and p.state == "pending"
            ):
                self.t_timeouts.arm(ref.id, now + t.ttl, LEASE)
        return _ok("task.heartbeat", corr_id)

    def task_halt(self, now: int, corr_id: Any, req: Flat) -> Flat:
        """Stop a task from being dispatched until continued (missing from the model)."""
        r = protocol.parse(protocol.TaskIdData, req)
        t = self._task_at(now, r.id)
        if t.state == "fulfilled":
            raise Refused(409, "Task is fulfilled")
        if t.state != "halted":
            t.state = "halted"
            t.pid = None
            t.ttl = None
            self.t_timeouts.disarm(r.id)
        return _ok("task.halt", corr_id)

    def task_continue(self, now: int, corr_id: Any, req: Flat) -> Flat:
        """Make a halted task pending again and dispatch it (missing from the model)."""
        r = protocol.parse(protocol.TaskIdData, req)
        t = self._task_at(now, r.id)
        p = self.promises.get(r.id)
        if t.state != "halted" or p is None or p.state != "pending":
            raise Refused(409, "Task is not halted")
        t.state = "pending"
        self._arm_retry(r.id, now)
        self._execute_if_targeted(r.id, t.version)
        return _ok("task.continue", corr_id)

    def task_search(self, now: int, corr_id: Any, req: Flat) -> Flat:
        """Page through tasks by state, ordered by id (missing from the model)."""
        r = protocol.parse(protocol.TaskSearchData, req)
        found = (t for t in self.tasks.values() if r.state is None or t.state == r.state)
        return self._search("task.search", corr_id, "tasks", found, r, self.task_record)

    # =========================================================================
    # SCHEDULES
    # =========================================================================
    #
    # The model keeps schedules as stubs that never fire. These follow the
    # oracle: a schedule creates its promise (and so dispatches its task) at
    # every cron occurrence.

    def schedule_create(self, now: int, corr_id: Any, req: Flat) -> Flat:
        kind = "schedule.create"
        r = protocol.parse(protocol.ScheduleCreateData, req)
        next_run = _next_cron(r.cron, now)
        if next_run is None:
            raise Refused(400, "Invalid cron expression")
        existing = self.schedules.get(r.id)
        if existing is None:
            existing = _Schedule(
                id=r.id,
                cron=r.cron,
                promise_id=r.promise_id,
                promise_timeout=r.promise_timeout,
                promise_param=r.promise_param.wire(),
                promise_tags=r.promise_tags,
                created_at=now,
            )
            self.schedules[r.id] = existing
            self.s_timeouts.arm(r.id, next_run)
        return _ok(kind, corr_id, schedule=self.schedule_record(existing))

    def schedule_get_at(self, now: int, corr_id: Any, req: Flat) -> Flat:
        r = protocol.parse(protocol.ScheduleIdData, req)
        s = self.schedules.get(r.id)
        if s is None:
            raise Refused(404, "Schedule not found")
        return _ok("schedule.get", corr_id, schedule=self.schedule_record(s))

    def schedule_delete_at(self, now: int, corr_id: Any, req: Flat) -> Flat:
        r = protocol.parse(protocol.ScheduleIdData, req)
        if self.schedules.pop(r.id, None) is None:
            raise Refused(404, "Schedule not found")
        self.s_timeouts.disarm(r.id)
        self.schedule_runs.pop(r.id, None)
        return _ok("schedule.delete", corr_id)

    def schedule_search_at(self, now: int, corr_id: Any, req: Flat) -> Flat:
        r = protocol.parse(protocol.ScheduleSearchData, req)
        wanted = r.tags or {}
        found = (
            s
            for s in self.schedules.values()
            if all(s.promise_tags.get(k) == v for k, v in wanted.items())
        )
        return self._search(
            "schedule.search",
            corr_id,
            "schedules",
            found,
            r,
            self.schedule_record,
            default_limit=10,
        )

    def _fire_schedules(self, now: int) -> None:
        for schedule_id, deadline in self.s_timeouts.pop_due(now):
            s = self.schedules.get(schedule_id)
            if not isinstance(s, _Schedule):
                continue
            occurrence: int | None = deadline.at
            while occurrence is not None and occurrence <= now:
                self._fire_once(s, occurrence)
                self.schedule_runs[schedule_id] = occurrence
                occurrence = _next_cron(s.cron, occurrence)
            if occurrence is not None:
                self.s_timeouts.arm(schedule_id, occurrence)

    def _fire_once(self, s: _Schedule, at: int) -> None:
        promise_id = s.promise_id.replace("{{.id}}", s.id).replace("{{.timestamp}}", str(at))
        if promise_id in self.promises:
            return
        tags = {
            **s.promise_tags,
            "resonate:schedule": s.id,
            "resonate:origin": promise_id,
            "resonate:branch": promise_id,
            "resonate:parent": promise_id,
        }
        create = protocol.PromiseCreateData.model_construct(
            id=promise_id,
            timeout_at=at + s.promise_timeout,
            param=WireValue.model_validate(s.promise_param),
            tags=tags,
        )
        self._create_or_get(at, create)

    # =========================================================================
    # RECORDS
    # =========================================================================

    def promise_record(self, p: DurablePromise, now: int = 0) -> Flat:
        """A promise as the server writes it.

        Divergences fixed: ``param`` and ``value`` are always objects (the
        model wrote ``null``), and a pending promise past its deadline reads
        as timed out even before the sweep has settled it.
        """
        state, settled_at = p.state, p.settled_at
        if state == "pending" and now > 0 and now >= p.timeout_at:
            state, settled_at = self.timeout_state(p.tags), p.timeout_at
        record: Flat = {
            "id": p.id,
            "state": state,
            "param": p.param,
            "value": p.value,
            "tags": p.tags,
            "timeoutAt": p.timeout_at,
            "createdAt": p.created_at,
        }
        if settled_at is not None:
            record["settledAt"] = settled_at
        return record

    def task_record(self, t: Task) -> Flat:
        """A task as the server writes it: ``resumes`` counts the promises it resumes on."""
        record: Flat = {
            "id": t.id,
            "state": t.state,
            "version": t.version,
            "resumes": len(t.resumes),
        }
        if t.ttl is not None:
            record["ttl"] = t.ttl
        if t.pid is not None:
            record["pid"] = t.pid
        return record

    def schedule_record(self, s: Any) -> Flat:
        entry = self.s_timeouts.get(s.id)
        record: Flat = {
            "id": s.id,
            "cron": s.cron,
            "promiseId": s.promise_id,
            "promiseTimeout": s.promise_timeout,
            "promiseParam": s.promise_param,
            "promiseTags": s.promise_tags,
            "createdAt": s.created_at,
            "nextRunAt": entry.at if entry is not None else 0,
        }
        last = self.schedule_runs.get(s.id)
        if last is not None:
            record["lastRunAt"] = last
        return record

    def preload(self, promise_id: str) -> list[Flat]:
        """Every other promise on the same ``resonate:branch``, from an index."""
        p = self.promises.get(promise_id)
        branch = p.tags.get("resonate:branch") if p is not None else None
        if not branch:
            return []
        return [
            self.promise_record(self.promises[other])
            for other in self._branches.get(branch, ())
            if other != promise_id
        ]

    # =========================================================================
    # TRANSITIONS SHARED BY SEVERAL OPERATIONS
    # =========================================================================

    def try_auto_timeout(self, now: int, promise_id: str) -> None:
        p = self.promises.get(promise_id)
        if p is None or p.state != "pending" or now < p.timeout_at:
            return
        p.state = self.timeout_state(p.tags)
        p.settled_at = p.timeout_at
        self.p_timeouts.disarm(promise_id)
        self.settle_effects(promise_id, now)

    def settle_effects(self, promise_id: str, now: int) -> None:
        """What follows a settlement: fulfil its task, resume awaiters, unblock listeners."""
        self.enqueue_settle(promise_id)
        self.resume_awaiters(promise_id, now)
        self.notify_subscribers(promise_id, now)

    def enqueue_settle(self, promise_id: str) -> None:
        """Fulfil the settled promise's own task and drop it from every awaited promise.

        Same transition as the model, which finds the awaited promises by
        scanning all of them; here an index names them.
        """
        t = self.tasks.get(promise_id)
        if t is None or t.state == "fulfilled":
            return
        t.state = "fulfilled"
        t.pid = None
        t.ttl = None
        t.resumes.clear()
        self.t_timeouts.disarm(promise_id)
        for awaited_id in self._awaiting.pop(promise_id, ()):
            awaited = self.promises.get(awaited_id)
            if awaited is not None:
                awaited.awaiters.discard(promise_id)

    def resume_awaiters(self, promise_id: str, now: int) -> None:
        """Resume the suspended tasks that awaited ``promise_id``.

        Divergences fixed: the version is kept (the server bumps it on
        acquire, not on resume), and an awaiter whose own promise is settled
        or past its deadline is left alone, as in the oracle.
        """
        p = self.promises.get(promise_id)
        if p is None or not p.awaiters:
            return
        awaiters, p.awaiters = p.awaiters, set()
        for awaiter_id in awaiters:
            self._awaiting[awaiter_id].discard(promise_id)
            awaiter = self.promises.get(awaiter_id)
            task = self.tasks.get(awaiter_id)
            if awaiter is None or task is None:
                continue
            if awaiter.state != "pending" or now >= awaiter.timeout_at:
                continue
            if task.state == "suspended":
                task.state = "pending"
                task.resumes = {promise_id}
                self._arm_retry(awaiter_id, now)
                self._execute_if_targeted(awaiter_id, task.version)
            elif task.state in ("pending", "acquired", "halted"):
                task.resumes.add(promise_id)

    def notify_subscribers(self, promise_id: str, now: int = 0) -> None:
        """Send ``unblock`` to every listener, with ``head: {}`` as the server's has."""
        p = self.promises.get(promise_id)
        if p is None or not p.subscribers:
            return
        message = {"kind": "unblock", "head": {}, "data": {"promise": self.promise_record(p, now)}}
        for address in p.subscribers:
            self.outgoing.append(OutgoingMessage(address=address, message=message))
        p.subscribers = set()

    def send_execute_message(self, address: str, task_id: str, version: int) -> None:
        """Queue ``execute``, replacing one already queued for the task in this batch.

        The message carries ``head.serverUrl``, as the server's does. The
        model finds the queued message by scanning the batch; an index keyed
        by task id keeps a tick that resumes thousands of tasks linear.
        """
        message = {
            "kind": "execute",
            "head": {"serverUrl": self.server_url},
            "data": {"task": {"id": task_id, "version": version}},
        }
        if self._batch is not self.outgoing:
            self._batch = self.outgoing
            self._batch_executes = {}
        queued = self._batch_executes.get(task_id)
        if queued is not None:
            queued.address = address
            queued.message = message
            return
        queued = OutgoingMessage(address=address, message=message)
        self._batch_executes[task_id] = queued
        self.outgoing.append(queued)

    # =========================================================================
    # HELPERS
    # =========================================================================

    def _promise_at(
        self, now: int, id: str, *, status: int = 404, missing: str = "Promise not found"
    ) -> DurablePromise:
        """The promise as of ``now`` (timed out if past its deadline), or refuse."""
        self.try_auto_timeout(now, id)
        p = self.promises.get(id)
        if p is None:
            raise Refused(status, missing)
        return p

    def _task_at(self, now: int, id: str) -> Task:
        """The task as of ``now`` (fulfilled if its promise timed out), or refuse with 404."""
        self.try_auto_timeout(now, id)
        t = self.tasks.get(id)
        if t is None:
            raise Refused(404, "Task not found")
        return t

    @staticmethod
    def _held(t: Task, version: int, refusal: str | None = None) -> Task:
        """``t`` if it is acquired at ``version``, else refuse with 409.

        The server words the refusal differently per operation; ``refusal``
        overrides its release/fulfill wording.
        """
        if t.state != "acquired":
            raise Refused(409, refusal or "Task is not acquired")
        if t.version != version:
            raise Refused(409, refusal or "Version mismatch")
        return t

    def _claimed(self, kind: str, corr_id: Any, t: Task, p: DurablePromise, now: int) -> Flat:
        """The answer to a create or acquire: the task, its promise, and the branch's preload."""
        return _ok(
            kind,
            corr_id,
            task=self.task_record(t),
            promise=self.promise_record(p, now),
            preload=self.preload(t.id),
        )

    def _new_promise(self, now: int, r: protocol.PromiseCreateData) -> DurablePromise:
        """Store a new promise: pending with its deadline armed, or already timed out."""
        timed_out = now >= r.timeout_at
        p = DurablePromise(
            id=r.id,
            state=self.timeout_state(r.tags) if timed_out else "pending",
            param=r.param.wire(),
            value={},
            tags=r.tags,
            timeout_at=r.timeout_at,
            created_at=r.timeout_at if timed_out else now,
            settled_at=r.timeout_at if timed_out else None,
            awaiters=set(),
            subscribers=set(),
        )
        self.promises[p.id] = p
        branch = p.tags.get("resonate:branch")
        if branch:
            self._branches[branch].add(p.id)
        if not timed_out:
            self.p_timeouts.arm(p.id, p.timeout_at)
        return p

    def _settle(self, p: DurablePromise, state: str, value: WireValue, now: int) -> None:
        p.state = state  # type: ignore[assignment]
        p.value = value.wire()
        p.settled_at = now
        self.p_timeouts.disarm(p.id)
        self.settle_effects(p.id, now)

    def _await(self, task_id: str, awaited: DurablePromise) -> None:
        awaited.awaiters.add(task_id)
        self._awaiting[task_id].add(awaited.id)

    def _acquire(self, t: Task, pid: str, ttl: int, now: int) -> None:
        t.state = "acquired"
        t.version += 1
        t.pid = pid
        t.ttl = ttl
        t.resumes.clear()
        self.t_timeouts.arm(t.id, now + ttl, LEASE)

    def _arm_retry(self, task_id: str, now: int) -> None:
        self.t_timeouts.arm(task_id, now + self.retry_timeout_ms, RETRY)

    def _execute_if_targeted(self, task_id: str, version: int) -> None:
        p = self.promises.get(task_id)
        address = p.tags.get("resonate:target") if p is not None else None
        if address is not None:
            self.send_execute_message(address, task_id, version)

    @staticmethod
    def _new_task(
        id: str,
        state: Literal["pending", "acquired", "fulfilled"],
        *,
        version: int = 0,
        pid: str | None = None,
        ttl: int | None = None,
    ) -> Task:
        return Task(id=id, state=state, version=version, pid=pid, ttl=ttl, resumes=set())

    @staticmethod
    def _check_target(tags: dict[str, str]) -> None:
        address = tags.get("resonate:target")
        if address is not None and not is_valid_address(address):
            raise InvalidRequest("Invalid resonate:target address")

    @staticmethod
    def _search(
        kind: str,
        corr_id: Any,
        field: str,
        found: Iterable[Any],
        r: protocol.PromiseSearchData | protocol.TaskSearchData | protocol.ScheduleSearchData,
        record: Callable[[Any], Flat],
        *,
        default_limit: int = 100,
    ) -> Flat:
        """One page of ``found`` by id after ``r.cursor``, naming the next cursor if more remain."""
        if r.limit is not None and r.limit > protocol.MAX_SEARCH_LIMIT:
            raise InvalidRequest("Invalid 'limit' — must be between 1 and 1000")
        limit = r.limit or default_limit
        ordered = sorted(found, key=lambda item: item.id)
        if r.cursor is not None:
            ordered = [item for item in ordered if item.id > r.cursor]
        page = ordered[:limit]
        data: Flat = {field: [record(item) for item in page]}
        if len(ordered) > limit and page:
            data["cursor"] = page[-1].id
        return _ok(kind, corr_id, **data)


class _Schedule:
    """A schedule as the server keeps it (the model's ``ScheduleStub`` never fires)."""

    __slots__ = (
        "created_at",
        "cron",
        "id",
        "promise_id",
        "promise_param",
        "promise_tags",
        "promise_timeout",
    )

    def __init__(
        self,
        *,
        id: str,
        cron: str,
        promise_id: str,
        promise_timeout: int,
        promise_param: Flat,
        promise_tags: dict[str, str],
        created_at: int,
    ) -> None:
        self.id = id
        self.cron = cron
        self.promise_id = promise_id
        self.promise_timeout = promise_timeout
        self.promise_param = promise_param
        self.promise_tags = promise_tags
        self.created_at = created_at


def _next_cron(expression: str, after_ms: int) -> int | None:
    """The first occurrence of ``expression`` strictly after ``after_ms``, or None if invalid.

    Five fields are minute-resolution; six or seven put seconds first, as
    the server's cron library does.
    """
    fields = expression.split()
    if len(fields) not in (5, 6, 7):
        return None
    after = datetime.fromtimestamp(after_ms // 1000, tz=UTC)
    try:
        it = croniter(expression, after, second_at_beginning=len(fields) > 5)
        return int(it.get_next(datetime).timestamp()) * 1000
    except (ValueError, KeyError, TypeError):
        return None
