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
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from resonate.error import ResonateError, ServerError
from resonate.promises import Promises
from resonate.types import PromiseRecord, Value

from pipeline_shared import names, promise_tree
from pipeline_shared.callbacks import SettleResult, create_callback_promise, settle_callback, stored_settlement
from pipeline_shared.catalogue import MAX_ATTEMPTS
from pipeline_shared.errors import (
    CallbackConflict,
    CoordinatorUnavailable,
    NotAwaitingRepair,
    PipelineAlreadyFinished,
    PipelineAwaitingRepair,
    PipelineConflict,
    PipelineNotFound,
    UnknownCallbackPromise,
)
from pipeline_shared.invocations import dispatch
from pipeline_shared.models import (
    DatabricksRun,
    PipelineOutcome,
    PipelineSpec,
    PipelineState,
    RepairDecision,
    RunError,
    RunReport,
    Settlement,
    TriggerOutcome,
    WatchRequest,
    parameters_in_use,
)
from pipeline_shared.promise_tree import CREATED_BY_TAG, OWNER_TAG, PipelineTree, Repairs, read_pipeline_tree

from .. import metrics

if TYPE_CHECKING:
    from .commands import StartRequest
    from .limits import StartAdmission
from ..schemas import (
    CallbackRequest,
    DatabricksRunView,
    NotificationView,
    PipelineStatus,
)
from ..settings import GatewaySettings

#: Settled callback promises remembered per gateway process (a few hundred
#: bytes each).
SETTLED_CACHE_SIZE = 10_000


def owner_of(root: PromiseRecord) -> str | None:
    """Who started the pipeline; None for one started before owners were recorded."""
    return PipelineTree(root, {}).owner


def now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class Pipelines:
    def __init__(self, promises: Promises, settings: GatewaySettings, admission: StartAdmission | None = None) -> None:
        self._promises = promises
        self._settings = settings
        #: The start limits (see pipeline_api.domain.limits); None: none.
        self._admission = admission
        #: Callback promises this process saw settled, by id. A settled promise
        #: never changes, so a repeated callback (the notebook retrying, a
        #: replay) is answered from here without asking Resonate again.
        #: Bounded: the least recently used are forgotten, and only cost a
        #: request to Resonate.
        self._settled: OrderedDict[str, Settlement] = OrderedDict()

    # ── start ────────────────────────────────────────────────────────────

    async def start(self, start: StartRequest) -> tuple[PipelineStatus, bool]:
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
        )
        record = await self._get(spec.id)
        created = False
        if record is None:
            if self._admission is not None:
                # Only a start that would create a pipeline is counted; a repeat was answered by the read.
                await self._admission.admit(principal.id, spec.id)
            nonce = uuid.uuid4().hex
            record = await self._create_root(spec, nonce, principal.id)
            created = record.tags.get(CREATED_BY_TAG) == nonce
        if not created and not principal.may_see(owner_of(record)):
            raise PipelineConflict(f"pipeline id {spec.id!r} is already taken; use another id")
        stored = spec_of(record)
        if stored != spec:
            raise PipelineConflict(
                f"pipeline {spec.id!r} was already started with a different request "
                f"(differs in: {', '.join(_differences(stored, spec))}); use another id"
            )
        if created:
            metrics.PIPELINES_STARTED.labels(job=start.job.name).inc()
        return await self._status_of(record, stored), created

    async def _create_root(self, spec: PipelineSpec, nonce: str, owner: str) -> PromiseRecord:
        # Not ``Resonate.rpc``, which would also subscribe the gateway to every
        # pipeline's completion (see pipeline_shared.invocations).
        deadline = now_ms() + 1000 * (spec.timeout_seconds + self._settings.PIPELINE_FINISH_GRACE_SECONDS)
        return await self._call(
            dispatch(
                self._promises,
                spec.id,
                names.RUN_PIPELINE,
                spec.model_dump(mode="json"),
                group=names.WORKER_GROUP,
                origin=spec.id,
                timeout_at=deadline,
                extra_tags={CREATED_BY_TAG: nonce, OWNER_TAG: owner},
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
        if root.state != "pending":
            return status_of(PipelineTree(root, {root.id: root}), spec, self._settings.catalogue.default)
        return status_of(await self._tree(root), spec, self._settings.catalogue.default)

    async def _tree(self, root: PromiseRecord) -> PipelineTree:
        """The pipeline's promises that say where it stands, read along its spine."""
        return await read_pipeline_tree(root, self._get)

    async def _repairs(self, root: PromiseRecord) -> Repairs:
        return (await self._tree(root)).repairs()

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

        repairs = await self._repairs(root)
        if repairs.open_window is not None:
            raise PipelineAwaitingRepair(
                f"pipeline {pipeline_id!r} awaits repair: its run failed; repair it "
                f"(POST /pipelines/{pipeline_id}/repair) or abandon it (POST /pipelines/{pipeline_id}/abandon)"
            )
        promise_id = repairs.current_callback_id
        cancel = Settlement(
            status="cancelled",
            error=RunError(type="Cancelled", message="cancelled at the user's request"),
            source="user",
            by=principal_id,
            received_at=now_ms(),
        )
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

    # ── repair and abandon ───────────────────────────────────────────────

    async def decide(
        self, root: PromiseRecord, principal_id: str, action: str, parameters: dict[str, str] | None = None
    ) -> PipelineStatus:
        """Settle the open repair window's decision: repair (with ``parameters``, resolved) or abandon.

        409 for a pipeline that is not awaiting repair, including one whose
        decision someone else made first: the first decision stands.
        """
        pipeline_id = root.id
        if root.state != "pending":
            raise NotAwaitingRepair(f"pipeline {pipeline_id!r} already finished; there is nothing to repair")
        repairs = await self._repairs(root)
        window = repairs.open_window
        if window is None or window.decision_promise_id is None:
            state = (await self.status(root)).state.value
            raise NotAwaitingRepair(f"pipeline {pipeline_id!r} is not awaiting repair: it is {state}")
        decision = RepairDecision(action=action, by=principal_id, parameters=parameters, decided_at=now_ms())
        try:
            stored = await self._call(self._promises.resolve(window.decision_promise_id, Value(data=decision)))
        except ServerError as exc:
            raise CoordinatorUnavailable(f"the Resonate server refused the decision: {exc}") from exc
        if stored.state != "resolved" or RepairDecision.model_validate(stored.value.data) != decision:
            raise NotAwaitingRepair(
                f"pipeline {pipeline_id!r} is no longer awaiting repair: its repair window "
                f"{'ended' if stored.state != 'resolved' else 'was already decided'}"
            )
        metrics.REPAIR_DECISIONS.labels(action=action).inc()
        return await self.status(await self.root(pipeline_id))

    async def parameters_for_repair(self, root: PromiseRecord, changes: dict[str, str]) -> dict[str, str]:
        """The parameters a repair reruns with: those the run now uses, with ``changes``, checked as at start.

        What the run now uses is the start's, or an earlier repair's: a repair
        that changes nothing reruns with what the failed attempt ran with.
        """
        spec = spec_of(root)
        job = self._settings.catalogue.job(spec.job)
        repairs = await self._repairs(root)
        return job.resolve(parameters_in_use(spec.parameters, repairs.attempts) | changes)

    # ── callback ─────────────────────────────────────────────────────────

    async def settle_from_callback(self, callback: CallbackRequest) -> tuple[str, bool]:
        """Settle the pipeline with the notebook's report; the signature is already checked.

        Returns the pipeline id and whether this callback settled it (False:
        it repeated the recorded outcome).
        """
        # Only a pipeline's callback promise can be settled here; checking the
        # shape first also keeps arbitrary bytes out of requests to Resonate.
        # A repaired run reports on a callback promise of its own, a later
        # child; its key is derived from that id, so only the run that was
        # handed the key can sign for it.
        pipeline_id = promise_tree.callback_pipeline_of(callback.promise_id)
        if pipeline_id is None:
            raise UnknownCallbackPromise(callback.promise_id)
        known = self._settled.get(callback.promise_id)
        if known is not None:
            self._settled.move_to_end(callback.promise_id)
        else:
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
                return pipeline_id, True
            known = outcome.stored
        if not known.agrees_with(callback.status, callback.result):
            raise CallbackConflict(
                f"pipeline {pipeline_id!r} already has a different outcome: {known.status} (from the {known.source})"
            )
        return pipeline_id, False

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


def status_of(tree: PipelineTree, spec: PipelineSpec, default_job: str) -> PipelineStatus:
    """The status document of the pipeline whose promises ``tree`` holds (its spine at least)."""
    root = tree.root
    base: dict[str, Any] = {
        "id": spec.id,
        "job": spec.job or default_job,
        "email": spec.email,
        "timeout_seconds": spec.timeout_seconds,
        "created_at": _iso(root.created_at),
    }
    if root.state == "resolved":
        outcome = PipelineOutcome.model_validate(root.value.data)
        receipt = outcome.notification
        return PipelineStatus(
            **base,
            **_parameters_view(spec, parameters_in_use(spec.parameters, outcome.attempts)),
            state=outcome.state,
            databricks=_run_view(outcome.run, outcome.report),
            result=outcome.result,
            error=outcome.error,
            notification=NotificationView(**receipt.model_dump()) if receipt else None,
            attempts=outcome.attempts,
            updated_at=_iso(root.settled_at or root.created_at),
        )
    if root.state != "pending":
        return PipelineStatus(
            **base,
            **_parameters_view(spec, spec.parameters),
            state=PipelineState.FAILED,
            databricks=None,
            error=RunError(
                type="WorkflowEnded",
                message=f"the pipeline's workflow ended {root.state.replace('_', ' ')} before finishing",
            ),
            updated_at=_iso(root.settled_at or root.created_at),
        )

    trigger = tree.trigger
    repairs = tree.repairs()
    callback = tree.get(repairs.current_callback_id)
    touched = [r for r in (root, callback, trigger, *repairs.records) if r is not None]
    updated = max(r.settled_at or r.created_at for r in touched)
    run = TriggerOutcome.model_validate(trigger.value.data) if trigger and trigger.state == "resolved" else None

    state, result, error, report, deadline = PipelineState.STARTING, None, None, None, None
    in_use = parameters_in_use(spec.parameters, repairs.attempts)
    window = repairs.open_window
    if window is not None:
        # The run failed; a person may repair or abandon it until the deadline.
        # Its report is the failed run's, as the awaiting email shows it.
        failed = stored_settlement(callback).stored if callback is not None else None
        report, error = (failed.report if failed is not None else None), window.attempt.error
        decision = tree.get(window.decision_promise_id)
        if decision is not None and decision.state == "pending":
            state = PipelineState.AWAITING_REPAIR
            deadline = _iso(window.repair_deadline) if window.repair_deadline else None
        else:
            # Decided (the repair is being made), or the window ended (the email is on its way).
            repairing = (
                decision is not None and decision.state == "resolved" and decision.value.data.get("action") == "repair"
            )
            state = PipelineState.WAITING if repairing else PipelineState.NOTIFYING
            if repairing:
                # The repair being made reruns with the decision's parameters (its record is not written
                # yet); the failed attempt's error is history (in ``attempts``), as once the record is.
                report, error = None, None
                with contextlib.suppress(ValidationError):
                    in_use = RepairDecision.model_validate(decision.value.data).parameters or in_use
    elif callback is not None and callback.state != "pending":
        # The outcome is known; the workflow is repairing, cancelling or emailing.
        state = PipelineState.NOTIFYING
        settled = stored_settlement(callback).stored
        if settled is not None:
            result, error, report = settled.result, settled.error, settled.report
    elif run is not None:
        state = PipelineState.WAITING if run.run is not None else PipelineState.NOTIFYING
        error = run.error
    return PipelineStatus(
        **base,
        **_parameters_view(spec, in_use),
        state=state,
        databricks=_run_view(run.run if run else None, report),
        result=result,
        error=error,
        attempts=repairs.attempts,
        repair_deadline=deadline,
        updated_at=_iso(updated),
    )


def spec_of(root: PromiseRecord) -> PipelineSpec:
    """The pipeline's spec; PipelineConflict when the root is not a pipeline's."""
    spec = PipelineTree(root, {}).spec
    if spec is None:
        # An id taken by something other than a pipeline (or a corrupted
        # record): never start a second thing under it.
        raise PipelineConflict(f"id {root.id!r} belongs to something that is not a pipeline")
    return spec


def _parameters_view(spec: PipelineSpec, in_use: dict[str, str]) -> dict[str, Any]:
    """The status document's parameters: what the run now uses, and the start's when a repair changed them."""
    return {"parameters": in_use, "parameters_at_start": spec.parameters if in_use != spec.parameters else None}


def _differences(stored: PipelineSpec, requested: PipelineSpec) -> list[str]:
    return [name for name in PipelineSpec.model_fields if getattr(stored, name) != getattr(requested, name)]


def _run_view(run: DatabricksRun | None, report: RunReport | None = None) -> DatabricksRunView | None:
    if run is None:
        return None
    return DatabricksRunView(run_id=run.run_id, run_page_url=run.run_page_url, job_id=run.job_id, report=report)
