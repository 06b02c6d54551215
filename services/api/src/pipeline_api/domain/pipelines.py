"""The gateway's steps: start, read, cancel, settle. It never calls Databricks.

Everything here reads and writes Resonate's durable state and nothing else,
so what the gateway says about a pipeline is the same after any restart of
any service. A pipeline is a tree of promises (see
:mod:`pipeline_shared.promise_tree`, which names them and reads them): its
root (id = pipeline id) holding the workflow's :class:`PipelineSpec` and, once
settled, the final :class:`PipelineOutcome`; the callback promise of each run,
settled by the notebook, the watchdog, a cancel or the worker; the trigger
step recording the Databricks run; and each repair's records.

Whose a pipeline is, is recorded with it, durably: the root promise's
``pipeline:owner`` tag holds the id of the principal that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from resonate.error import ResonateError, ServerError
from resonate.promises import Promises
from resonate.types import PromiseRecord, Value

from pipeline_shared import names, promise_tree, tracing
from pipeline_shared.callbacks import SettleResult, create_callback_promise, settle_callback
from pipeline_shared.catalogue import MAX_ATTEMPTS
from pipeline_shared.errors import (
    CallbackConflict,
    CoordinatorUnavailable,
    GateAmbiguous,
    GateNotOpen,
    MayNotDecide,
    NotAwaitingRepair,
    PipelineAlreadyFinished,
    PipelineAwaitingRepair,
    PipelineConflict,
    PipelineNotFound,
    StepAmbiguous,
    UnknownCallbackPromise,
)
from pipeline_shared.invocations import create_pipeline_root, dispatch
from pipeline_shared.models import (
    ApprovalDecision,
    ApprovalRecord,
    PipelineSpec,
    RepairDecision,
    RunError,
    Settlement,
    WatchRequest,
    parameters_in_use,
)
from pipeline_shared.promise_tree import CREATED_BY_TAG, PipelineTree, Repairs, read_pipeline_tree

from .. import metrics
from ..auth.principals import Principal, Scope
from ..schemas import CallbackRequest, PipelineStatus
from ..settings import GatewaySettings
from .documents import status_of
from .snapshots import NoSnapshots, PromiseSnapshots
from .steps import chosen_gate, chosen_repair

if TYPE_CHECKING:
    from .commands import StartRequest
    from .limits import StartAdmission

#: The errors of deciding at a gate, for the web page as for the JSON routes (see :meth:`Pipelines.decide_gate`).
__all__ = ["GateAmbiguous", "GateNotOpen", "MayNotDecide", "Pipelines", "StepAmbiguous", "spec_of", "status_of"]

#: The tracer's scope: the gateway's spans (see pipeline_shared.tracing).
TRACE_SCOPE = "pipeline_api"

#: Settled callback promises remembered per gateway process (a few hundred
#: bytes each).
SETTLED_CACHE_SIZE = 10_000


def owner_of(root: PromiseRecord) -> str | None:
    """Who started the pipeline; None for one started before owners were recorded."""
    return PipelineTree(root, {}).owner


def now_ms() -> int:
    return int(time.time() * 1000)


class Pipelines:
    def __init__(
        self,
        promises: Promises,
        settings: GatewaySettings,
        admission: StartAdmission | None = None,
        snapshots: PromiseSnapshots | None = None,
    ) -> None:
        self._promises = promises
        self._settings = settings
        #: Reads every promise of a pipeline run by its code (see pipeline_api.domain.snapshots).
        self._snapshots = snapshots or NoSnapshots()
        #: The start limits (see pipeline_api.domain.limits); None: none.
        self._admission = admission
        #: Callback promises this process saw settled, by id. A settled promise
        #: never changes, so a repeated callback (the notebook retrying, a
        #: replay) is answered from here without asking Resonate again.
        #: Bounded: the least recently used are forgotten, and only cost a
        #: request to Resonate.
        self._settled: OrderedDict[str, Settlement] = OrderedDict()
        #: Each pipeline's trace context, read from its root when tracing is on.
        self._traces = tracing.TraceContexts()

    # ── start ────────────────────────────────────────────────────────────

    async def start(self, start: StartRequest) -> tuple[PipelineStatus, bool]:
        """:meth:`_start` in the ``pipeline.start`` span, whose context the root records: the pipeline's trace."""
        with tracing.span(TRACE_SCOPE, "pipeline.start", kind=tracing.SpanKind.SERVER) as span:
            status, created = await self._start(start)
            tracing.set_attributes(
                span, {"pipeline.id": status.id, "pipeline.job": start.job.name, "pipeline.created": created}
            )
            return status, created

    async def _start(self, start: StartRequest) -> tuple[PipelineStatus, bool]:
        """Start the pipeline for ``principal``, or find the identical one it already started.

        Returns the status and whether this call created it. Safe under any
        number of concurrent identical requests: Resonate creates a promise id
        once and hands every later create the stored record, which is then
        compared with this request. Each create carries a nonce tag, so of
        identical requests racing past the read, exactly one is told it
        created the pipeline.

        An id already holding a pipeline that ``principal`` may not see
        (another principal's; see :meth:`Principal.may_see`) is answered 409
        ``pipeline_conflict``, "already taken; use another id", whatever the
        request, and before the request is compared with it. The answer is
        the same whether the request matches the other pipeline or not (else
        a stranger could test guesses at its email and parameters), and it
        carries nothing of the other pipeline, not even whose it is. That the
        id is in use cannot be hidden, since ids are one namespace and a
        second pipeline cannot be made under one; 409 says no more than that,
        and it is what the client has to act on: choose another id. 200
        would hand over another's pipeline; 404 would be false (a start makes
        what is not there) and a retry would meet it again; 403 would say as
        much as 409 while suggesting that other credentials could make the id
        theirs. The decision is made here, not in a dependency, because whose
        the id is is known only from the create's answer: another principal
        can create a pipeline under it between a read and this create.
        """
        request, principal = start.request, start.principal
        spec = PipelineSpec(
            id=request.id or uuid.uuid4().hex,
            email=request.email,
            parameters=start.parameters,
            timeout_seconds=start.timeout_seconds,
            job=start.job.name,
            version=start.job.version,
        )
        # Only a start that would create a pipeline is counted: the admission tells a taken id in the same
        # statement, and the create answers a repeat (it returns the stored record). Two round trips for a
        # counted principal, one for an uncounted one.
        if self._admission is not None and self._admission.counts(principal.id):
            await self._admission.admit(principal.id, spec.id)
        nonce = uuid.uuid4().hex
        record = await self._create_root(spec, nonce, principal.id)
        created = record.tags.get(CREATED_BY_TAG) == nonce
        if not created and not principal.may_see(owner_of(record)):
            raise PipelineConflict(f"pipeline id {spec.id!r} is already taken; use another id")
        stored = spec_of(record)
        # The version is the deployment's, not the request's: a repeat keeps the pipeline it started, on the
        # version it started on (None for one started before pipelines were code).
        requested = spec.model_copy(update={"version": stored.version})
        if stored != requested:
            raise PipelineConflict(
                f"pipeline {spec.id!r} was already started with a different request "
                f"(differs in: {', '.join(_differences(stored, requested))}); use another id"
            )
        if created:
            metrics.PIPELINES_STARTED.labels(job=start.job.name).inc()
            # Just made: it has no other promise yet to read (one round trip fewer on every start).
            tree = PipelineTree(record, {record.id: record})
            return status_of(tree, stored, self._settings.catalogue.default), created
        return await self._status_of(record, stored), created

    async def _create_root(self, spec: PipelineSpec, nonce: str, owner: str) -> PromiseRecord:
        # Not ``Resonate.rpc``, which would also subscribe the gateway to every
        # pipeline's completion (see pipeline_shared.invocations).
        return await self._call(
            create_pipeline_root(
                self._promises,
                spec,
                finish_grace_seconds=self._settings.PIPELINE_FINISH_GRACE_SECONDS,
                created_by=nonce,
                owner=owner,
            )
        )

    # ── read ─────────────────────────────────────────────────────────────

    async def root(self, pipeline_id: str) -> PromiseRecord:
        """The pipeline's root promise; PipelineNotFound if there is none."""
        record = await self._get(pipeline_id)
        if record is None:
            raise PipelineNotFound(pipeline_id)
        return record

    async def status(self, root: PromiseRecord) -> PipelineStatus:
        return await self._status_of(root, spec_of(root))

    async def _status_of(self, root: PromiseRecord, spec: PipelineSpec) -> PipelineStatus:
        if spec.version is None and root.state != "pending":
            return status_of(PipelineTree(root, {root.id: root}), spec, self._settings.catalogue.default)
        return status_of(await self._tree(root), spec, self._settings.catalogue.default)

    async def _tree(self, root: PromiseRecord) -> PipelineTree:
        """The pipeline's promises that say where it stands: along its spine, or all of them if run by its code."""
        if PipelineTree(root, {}).composed:
            promises = await self._snapshots.promises_of(root.id)
            latest = promises.get(root.id, root)
            return PipelineTree(latest, {**promises, root.id: latest})
        return await read_pipeline_tree(root, self._get)

    async def _repairs(self, root: PromiseRecord, step: str | None = None) -> Repairs:
        """The repairs of the one-job workflow's run; for a pipeline run by its code, of the job step meant."""
        tree = await self._tree(root)
        if not tree.composed:
            _no_step_named(root.id, step)
            return tree.repairs()
        return tree.repairs(chosen_repair(tree, step))

    # ── cancel ───────────────────────────────────────────────────────────

    async def cancel(self, root: PromiseRecord, principal_id: str) -> PipelineStatus:
        """Settle the pipeline as cancelled, recording who asked; the worker then cancels the run and emails.

        ``principal_id`` has no default: every caller (the JSON API, the web
        page) must say who it acts for, or the timeline would show nobody.
        """
        pipeline_id = root.id
        spec = spec_of(root)
        if root.state != "pending":
            state = (await self._status_of(root, spec)).state
            raise PipelineAlreadyFinished(f"pipeline {pipeline_id!r} already finished: {state.value}")
        if spec.version is not None:
            return await self._cancel_steps(root, principal_id)

        repairs = await self._repairs(root)
        if repairs.open_window is not None:
            raise PipelineAwaitingRepair(
                f"pipeline {pipeline_id!r} awaits repair: its run failed; repair it "
                f"(POST /pipelines/{pipeline_id}/repair) or abandon it (POST /pipelines/{pipeline_id}/abandon)"
            )
        promise_id = repairs.current_callback_id
        cancel = _cancellation(principal_id)
        try:
            outcome = await self._settle(promise_id, cancel)
        except UnknownCallbackPromise:
            # No worker has picked the pipeline up yet. Create the callback
            # promise exactly as the workflow will, already cancelled; the
            # workflow then finds it settled and starts no run.
            deadline = min(now_ms() + spec.timeout_seconds * 1000, root.timeout_at)
            await self._call(create_callback_promise(self._promises, pipeline_id, deadline))
            outcome = await self._settle(promise_id, cancel)
        if not outcome.accepted(cancel):
            known = outcome.stored.status if outcome.stored else outcome.state.replace("_", " ")
            raise PipelineAlreadyFinished(
                f"pipeline {pipeline_id!r} is already finishing: its outcome is known ({known})"
            )
        metrics.CANCELS.inc()
        return await self.status(await self.root(pipeline_id))

    async def _cancel_steps(self, root: PromiseRecord, principal_id: str) -> PipelineStatus:
        """Cancel a pipeline run by its code: the marker first (no step starts after it), then what waits.

        Every job step's run still going is cancelled by settling its current
        callback, as a one-job workflow's is; every open gate is closed with a
        ``cancel`` decision. Each settle is idempotent, and a step that ended
        meanwhile keeps its outcome, so a repeated cancel changes nothing.
        """
        pipeline_id = root.id
        tree = await self._tree(root)
        waiting = tree.awaiting_repair()
        if waiting:
            names_ = ", ".join(repr(tree.job_steps[step].record.name) for step in waiting)
            raise PipelineAwaitingRepair(
                f"pipeline {pipeline_id!r} awaits repair of {names_}: repair it "
                f"(POST /pipelines/{pipeline_id}/repair) or abandon it (POST /pipelines/{pipeline_id}/abandon)"
            )
        at = now_ms()
        marker = promise_tree.cancel_marker_id(pipeline_id)
        await self._call(
            self._promises.create(
                marker,
                timeout_at=root.timeout_at,
                param=Value(data={"by": principal_id, "at": at}),
                tags={"resonate:origin": pipeline_id},
            )
        )
        # Read again now that the marker is there: a step the worker made since the first read, before
        # it could see the marker, may be starting its run; the worker makes a step before it looks for
        # the marker, so every step that will start a run is in this read.
        tree = await self._tree(root)
        cancel = _cancellation(principal_id, at)
        for step in tree.job_steps:
            callback = tree.get(tree.repairs(step).current_callback_id)
            if callback is not None and callback.state == "pending":
                # One that ended meanwhile keeps its outcome: the step is over either way.
                with contextlib.suppress(UnknownCallbackPromise):
                    await self._settle(callback.id, cancel)
        closed = ApprovalDecision(action="cancel", by=principal_id, decided_at=at)
        for gate in tree.open_gates():
            await self._resolve_decision(gate.record.decision_promise_id, closed)
        metrics.CANCELS.inc()
        return await self.status(await self.root(pipeline_id))

    # ── approval gates ───────────────────────────────────────────────────

    async def approve(
        self, root: PromiseRecord, principal: Principal, gate: str | None, comment: str
    ) -> PipelineStatus:
        """Approve at the gate named (or the only one open); see :meth:`decide_gate`."""
        return await self.decide_gate(root, principal, "approve", gate, comment)

    async def reject(self, root: PromiseRecord, principal: Principal, gate: str | None, comment: str) -> PipelineStatus:
        """Reject at the gate named (or the only one open); see :meth:`decide_gate`."""
        return await self.decide_gate(root, principal, "reject", gate, comment)

    async def decide_gate(
        self, root: PromiseRecord, principal: Principal, action: str, gate: str | None, comment: str
    ) -> PipelineStatus:
        """Settle an open gate's decision promise with ``principal``'s decision: the first decision stands.

        GateNotOpen (409) when there is no open gate to decide, that one was
        decided already (by anyone: the first decision stands), or its
        deadline passed; GateAmbiguous (409) when several are open and none
        is named; MayNotDecide (403) when ``principal`` holds none of the
        gate's scopes (and is no admin).
        """
        pipeline_id = root.id
        if spec_of(root).version is None:
            raise GateNotOpen(f"pipeline {pipeline_id!r} has no approval gates: it runs one job")
        if root.state != "pending":
            raise GateNotOpen(f"pipeline {pipeline_id!r} already finished; there is nothing to approve")
        chosen = chosen_gate(await self._tree(root), gate)
        if not may_decide(principal, chosen.record):
            raise MayNotDecide(
                f"deciding gate {chosen.record.name!r} of pipeline {pipeline_id!r} needs one of the scopes "
                f"{', '.join(repr(scope) for scope in chosen.record.scopes)}, which your credentials do not grant"
            )
        if chosen.decision is None or chosen.decision.state != "pending":
            raise GateNotOpen(_closed(pipeline_id, chosen.record.name, chosen.decision))
        decision = ApprovalDecision(action=action, by=principal.id, comment=comment, decided_at=now_ms())
        stored = await self._resolve_decision(chosen.record.decision_promise_id, decision)
        if stored.state != "resolved" or ApprovalDecision.model_validate(stored.value.data) != decision:
            raise GateNotOpen(_closed(pipeline_id, chosen.record.name, stored))
        metrics.APPROVALS.labels(decision=action).inc()
        return await self.status(await self.root(pipeline_id))

    async def gate_grants(self, root: PromiseRecord, principal: Principal, *, deciding: bool = False) -> bool:
        """Whether a gate of the running pipeline names a scope of ``principal``: then it may see the pipeline.

        To read it, the gate must be open; to decide, any of its gates will do, so that a second decision
        meets the gate's answer (409, decided) rather than a pipeline that vanished (404).
        """
        if not PipelineTree(root, {}).composed or root.state != "pending":
            return False
        tree = await self._tree(root)
        gates = list(tree.gates.values()) if deciding else tree.open_gates()
        return any(may_decide(principal, gate.record) for gate in gates)

    async def _resolve_decision(self, promise_id: str, decision: BaseModel) -> PromiseRecord:
        try:
            return await self._call(self._promises.resolve(promise_id, Value(data=decision)))
        except ServerError as exc:
            raise CoordinatorUnavailable(f"the Resonate server refused the decision: {exc}") from exc

    # ── repair and abandon ───────────────────────────────────────────────

    async def decide(
        self,
        root: PromiseRecord,
        principal_id: str,
        action: str,
        parameters: dict[str, str] | None = None,
        step: str | None = None,
    ) -> PipelineStatus:
        """Settle the open repair window's decision: repair (with ``parameters``, resolved) or abandon.

        409 for a pipeline that is not awaiting repair, including one whose
        decision someone else made first: the first decision stands. For a
        pipeline run by its code, ``step`` (id or name) says which job step's
        window, when several are open (409 ``step_ambiguous`` otherwise).
        """
        pipeline_id = root.id
        if root.state != "pending":
            raise NotAwaitingRepair(f"pipeline {pipeline_id!r} already finished; there is nothing to repair")
        repairs = await self._repairs(root, step)
        window = repairs.open_window
        if window is None or window.decision_promise_id is None:
            state = (await self.status(root)).state.value
            raise NotAwaitingRepair(f"pipeline {pipeline_id!r} is not awaiting repair: it is {state}")
        decision = RepairDecision(action=action, by=principal_id, parameters=parameters, decided_at=now_ms())
        stored = await self._resolve_decision(window.decision_promise_id, decision)
        if stored.state != "resolved" or RepairDecision.model_validate(stored.value.data) != decision:
            raise NotAwaitingRepair(
                f"pipeline {pipeline_id!r} is no longer awaiting repair: its repair window "
                f"{'ended' if stored.state != 'resolved' else 'was already decided'}"
            )
        metrics.REPAIR_DECISIONS.labels(action=action).inc()
        return await self.status(await self.root(pipeline_id))

    async def parameters_for_repair(
        self, root: PromiseRecord, changes: dict[str, str], step: str | None = None
    ) -> dict[str, str]:
        """The parameters a repair reruns with: those the run now uses, with ``changes``, checked as at start.

        What the run now uses is the start's (a job step's: its record's), or
        an earlier repair's: a repair that changes nothing reruns with what
        the failed attempt ran with.
        """
        spec = spec_of(root)
        tree = await self._tree(root)
        if not tree.composed:
            _no_step_named(root.id, step)
            return self._settings.catalogue.job(spec.job).resolve(
                parameters_in_use(spec.parameters, tree.repairs().attempts) | changes
            )
        if root.state != "pending":
            raise NotAwaitingRepair(f"pipeline {root.id!r} already finished; there is nothing to repair")
        record = tree.job_steps[chosen_repair(tree, step)].record
        return self._settings.catalogue.job(record.job).resolve(
            parameters_in_use(record.parameters, tree.repairs(record.step).attempts) | changes
        )

    # ── callback ─────────────────────────────────────────────────────────

    async def settle_from_callback(self, callback: CallbackRequest) -> tuple[str, bool]:
        """Settle the pipeline with the notebook's report; the signature is already checked.

        Returns the pipeline id and whether this callback settled it (False:
        it repeated the recorded outcome). Traced as ``pipeline.callback``, in
        the pipeline's trace.
        """
        # Only a pipeline's callback promise can be settled here; checking the
        # shape first also keeps arbitrary bytes out of requests to Resonate.
        # A repaired run reports on a callback promise of its own, a later
        # child; its key is derived from that id, so only the run that was
        # handed the key can sign for it.
        pipeline_id = promise_tree.callback_pipeline_of(callback.promise_id)
        if pipeline_id is None:
            raise UnknownCallbackPromise(callback.promise_id)
        parent = await self._traces.of(self._promises, pipeline_id)
        attributes = {"pipeline.id": pipeline_id, "callback.status": callback.status}
        with tracing.span(
            TRACE_SCOPE, "pipeline.callback", parent=parent, kind=tracing.SpanKind.SERVER, attributes=attributes
        ) as span:
            settled = await self._settle_from_callback(pipeline_id, callback)
            tracing.set_attributes(span, {"callback.outcome": "accepted" if settled else "duplicate"})
            return pipeline_id, settled

    async def _settle_from_callback(self, pipeline_id: str, callback: CallbackRequest) -> bool:
        known = self._settled.get(callback.promise_id)
        if known is not None:
            self._settled.move_to_end(callback.promise_id)
        else:
            await self._refuse_unless_callback(pipeline_id, callback.promise_id)
            settlement = Settlement(
                status=callback.status,
                result=callback.result,
                error=callback.error,
                source="callback",
                received_at=now_ms(),
            )
            outcome = await self._settle(callback.promise_id, settlement)
            if outcome.stored is None:
                raise CallbackConflict(
                    f"pipeline {pipeline_id!r} stopped waiting for this callback: its callback promise is "
                    f"{outcome.state.replace('_', ' ')}"
                )
            if outcome.stored.attempt == settlement.attempt:
                return True
            known = outcome.stored
        if not known.agrees_with(callback.status, callback.result):
            raise CallbackConflict(
                f"pipeline {pipeline_id!r} already has a different outcome: {known.status} (from the {known.source})"
            )
        return False

    async def _refuse_unless_callback(self, pipeline_id: str, promise_id: str) -> None:
        """UnknownCallbackPromise unless ``promise_id`` is one of the pipeline's callback promises.

        Its shape is not enough: a job step's own promise (``P:N``) and a
        gate's decision (``P:N.1``) look like callbacks. The pipeline's tree
        says which promises its runs report on, and the promise itself must
        be one its workflow made to be settled from outside.
        """
        root = await self._get(pipeline_id)
        if root is None:
            raise UnknownCallbackPromise(promise_id)
        tree = await self._tree(root)
        if promise_id not in tree.callbacks:
            raise UnknownCallbackPromise(promise_id)
        promise = tree.get(promise_id) or await self._get(promise_id)
        if promise is None or not tree.is_callback(promise):
            raise UnknownCallbackPromise(promise_id)

    async def _settle(self, promise_id: str, settlement: Settlement) -> SettleResult:
        try:
            outcome = await self._call(settle_callback(self._promises, promise_id, settlement))
        except ServerError as exc:
            if exc.code == 404:
                raise UnknownCallbackPromise(promise_id) from exc
            raise CoordinatorUnavailable(f"the Resonate server refused the settlement: {exc}") from exc
        if outcome.stored is not None:
            self._settled[promise_id] = outcome.stored
            if len(self._settled) > SETTLED_CACHE_SIZE:
                self._settled.popitem(last=False)
        return outcome

    # ── notifications ─────────────────────────────────────────────────────

    async def check_on_notification(self, run_id: int, event: str) -> str:
        """Dispatch one check of the run's pipeline, at most one per event and window; what was done.

        ``scheduled``: a check is on its way; ``already_scheduled``: this
        window's check for this event exists already (the notification was a
        repeat, or a flood); ``ignored``: no pipeline is waiting on the run
        (not ours, or the pipeline has its outcome: it is notifying, awaits
        repair, or has finished). An ignored notification is still
        acknowledged (202), so Databricks does not send it again and again;
        nothing is dispatched, so nothing joins the pipeline's timeline.
        """
        # A repaired run keeps its id; each repair of it has an index of its own. The latest is the one waited on.
        index = await self._get(promise_tree.run_index_id(run_id))
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if index is None or (later := await self._get(promise_tree.run_index_id(run_id, attempt))) is None:
                break
            index = later
        if index is None or index.state != "pending":
            return "ignored"
        try:
            watch = WatchRequest.model_validate(index.param.data)
        except ValidationError:
            return "ignored"
        # The index stays pending until its own timeout, long after the run's
        # outcome is known; the callback promise says whether anyone still waits.
        callback = await self._get(watch.promise_id)
        if callback is None or callback.state != "pending":
            return "ignored"
        window = now_ms() // (1000 * self._settings.NOTIFICATION_CHECK_WINDOW_SECONDS)
        nonce = uuid.uuid4().hex
        record = await self._call(
            dispatch(
                self._promises,
                promise_tree.hint_check_id(
                    promise_tree.base_of(watch.pipeline_id, watch.step), watch.attempt, event, window
                ),
                names.WATCH_DATABRICKS_RUN,
                watch.model_dump(mode="json"),
                group=names.WORKER_GROUP,
                origin=watch.pipeline_id,
                timeout_at=index.timeout_at,
                extra_tags={CREATED_BY_TAG: nonce},
            )
        )
        return "scheduled" if record.tags.get(CREATED_BY_TAG) == nonce else "already_scheduled"

    # ── plumbing ─────────────────────────────────────────────────────────

    async def _get(self, promise_id: str) -> PromiseRecord | None:
        try:
            return await self._call(self._promises.get(promise_id))
        except ServerError as exc:
            if exc.code == 404:
                return None
            raise CoordinatorUnavailable(f"the Resonate server refused a read: {exc}") from exc

    @staticmethod
    async def _call[T](operation: Any) -> T:
        """Await a Resonate request, bounded: no request may hang the gateway on a slow database."""
        try:
            return await asyncio.wait_for(operation, timeout=10)
        except ServerError:
            raise
        except (ResonateError, TimeoutError) as exc:
            raise CoordinatorUnavailable(f"the Resonate server is unreachable: {exc}") from exc


def spec_of(root: PromiseRecord) -> PipelineSpec:
    """The pipeline's spec; PipelineConflict when the root is not a pipeline's."""
    spec = PipelineTree(root, {}).spec
    if spec is None:
        # An id taken by something other than a pipeline (or a corrupted
        # record): never start a second thing under it.
        raise PipelineConflict(f"id {root.id!r} belongs to something that is not a pipeline")
    return spec


def _differences(stored: PipelineSpec, requested: PipelineSpec) -> list[str]:
    return [name for name in PipelineSpec.model_fields if getattr(stored, name) != getattr(requested, name)]


def may_decide(principal: Principal, gate: ApprovalRecord) -> bool:
    """Whether ``principal`` may decide at ``gate``: it holds one of the scopes the gate names, or is an admin."""
    return principal.allows(Scope.ADMIN) or any(scope.value in gate.scopes for scope in principal.scopes)


def _cancellation(principal_id: str, at: int | None = None) -> Settlement:
    return Settlement(
        status="cancelled",
        error=RunError(type="Cancelled", message="cancelled at the user's request"),
        source="user",
        by=principal_id,
        received_at=at or now_ms(),
    )


def _closed(pipeline_id: str, gate: str, decision: PromiseRecord | None) -> str:
    """Why gate ``gate`` cannot be decided, from its decision promise as last read."""
    if decision is not None and decision.state == "rejected_timedout":
        why = "its deadline passed"
    elif decision is not None and decision.state == "resolved":
        why = "it was already decided"
    else:
        why = "it is not open"
    return f"gate {gate!r} of pipeline {pipeline_id!r} is not awaiting approval: {why}"


def _no_step_named(pipeline_id: str, step: str | None) -> None:
    """A pipeline started before pipelines were code has no steps: naming one is a mistake, said as such."""
    if step is not None:
        raise NotAwaitingRepair(f"pipeline {pipeline_id!r} has no steps: it runs one job; name no step")
