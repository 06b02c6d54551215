"""The gateway's steps: start, read, cancel, settle. It never calls Databricks.

Everything here reads and writes Resonate's durable state and nothing else,
so what the gateway says about a pipeline is the same after any restart of
any service. A pipeline is:

- its root promise (id = pipeline id), whose param holds the workflow's
  :class:`PipelineSpec` and whose value, once settled, the final
  :class:`PipelineOutcome`;
- the callback promise ``{id}:1``, settled by the notebook, the watchdog, a
  cancel or the worker;
- the trigger step ``{id}:2``, whose value records the Databricks run.

Whose a pipeline is, is recorded with it, durably: the root promise's
``pipeline:owner`` tag holds the id of the principal that started it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from resonate.error import ResonateError, ServerError
from resonate.promises import Promises
from resonate.types import PromiseRecord

from pipeline_shared import ids, names
from pipeline_shared.callbacks import SettleResult, create_callback_promise, settle_callback, stored_settlement
from pipeline_shared.errors import (
    CallbackConflict,
    CoordinatorUnavailable,
    PipelineAlreadyFinished,
    PipelineConflict,
    PipelineNotFound,
    UnknownCallbackPromise,
)
from pipeline_shared.invocations import dispatch
from pipeline_shared.models import (
    PIPELINE_ID,
    PipelineOutcome,
    PipelineSpec,
    PipelineState,
    RunError,
    Settlement,
    TriggerOutcome,
)

from . import metrics
from .principals import Principal
from .schemas import (
    CallbackRequest,
    DatabricksRunView,
    NotificationView,
    PipelineRequest,
    PipelineStatus,
)
from .settings import GatewaySettings

#: Settled callback promises remembered per gateway process (a few hundred
#: bytes each).
SETTLED_CACHE_SIZE = 10_000

#: Tag on a pipeline's root promise holding the nonce of the start request
#: that created it: Resonate hands a repeated create the stored record.
CREATED_BY_TAG = "pipeline:created-by"

#: Tag on a pipeline's root promise holding the id of the principal that started it.
OWNER_TAG = "pipeline:owner"


def owner_of(root: PromiseRecord) -> str | None:
    """Who started the pipeline; None for one started before owners were recorded."""
    return root.tags.get(OWNER_TAG)


def now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class Pipelines:
    def __init__(self, promises: Promises, settings: GatewaySettings) -> None:
        self._promises = promises
        self._settings = settings
        #: Callback promises this process saw settled, by id. A settled promise
        #: never changes, so a repeated callback (the notebook retrying, a
        #: replay) is answered from here without asking Resonate again.
        #: Bounded: the least recently used are forgotten, and only cost a
        #: request to Resonate.
        self._settled: OrderedDict[str, Settlement] = OrderedDict()

    # ── start ────────────────────────────────────────────────────────────

    async def start(self, request: PipelineRequest, principal: Principal) -> tuple[PipelineStatus, bool]:
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
        spec = PipelineSpec(
            id=request.id or uuid.uuid4().hex,
            email=request.email,
            parameters=request.parameters,
            timeout_seconds=request.timeout_seconds or self._settings.PIPELINE_DEFAULT_TIMEOUT_SECONDS,
        )
        record = await self._get(spec.id)
        created = False
        if record is None:
            nonce = uuid.uuid4().hex
            record = await self._create_root(spec, nonce, principal.id)
            created = record.tags.get(CREATED_BY_TAG) == nonce
        if not created and not principal.may_see(owner_of(record)):
            raise PipelineConflict(f"pipeline id {spec.id!r} is already taken; use another id")
        stored = _spec_of(record)
        if stored != spec:
            raise PipelineConflict(
                f"pipeline {spec.id!r} was already started with a different request "
                f"(differs in: {', '.join(_differences(stored, spec))}); use another id"
            )
        if created:
            metrics.PIPELINES_STARTED.labels(job="default").inc()  # TODO(job label)
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
        return await self._status_of(root, _spec_of(root))

    async def _status_of(self, root: PromiseRecord, spec: PipelineSpec) -> PipelineStatus:
        base: dict[str, Any] = {
            "id": spec.id,
            "email": spec.email,
            "parameters": spec.parameters,
            "timeout_seconds": spec.timeout_seconds,
            "created_at": _iso(root.created_at),
        }
        if root.state == "resolved":
            outcome = PipelineOutcome.model_validate(root.value.data)
            receipt = outcome.notification
            return PipelineStatus(
                **base,
                state=outcome.state,
                databricks=_run_view(outcome.run),
                result=outcome.result,
                error=outcome.error,
                notification=NotificationView(**receipt.model_dump()) if receipt else None,
                updated_at=_iso(root.settled_at or root.created_at),
            )
        if root.state != "pending":
            return PipelineStatus(
                **base,
                state=PipelineState.FAILED,
                databricks=None,
                error=RunError(
                    type="WorkflowEnded",
                    message=f"the pipeline's workflow ended {root.state.replace('_', ' ')} before finishing",
                ),
                updated_at=_iso(root.settled_at or root.created_at),
            )

        callback, trigger = await asyncio.gather(
            self._get(ids.callback_promise_id(spec.id)), self._get(ids.trigger_step_id(spec.id))
        )
        touched = [r for r in (root, callback, trigger) if r is not None]
        updated = max(r.settled_at or r.created_at for r in touched)
        run = TriggerOutcome.model_validate(trigger.value.data) if trigger and trigger.state == "resolved" else None

        state, result, error = PipelineState.STARTING, None, None
        if callback is not None and callback.state != "pending":
            # The outcome is known; the workflow is cancelling or emailing.
            state = PipelineState.NOTIFYING
            settled = stored_settlement(callback).stored
            if settled is not None:
                result, error = settled.result, settled.error
        elif run is not None:
            state = PipelineState.WAITING if run.run is not None else PipelineState.NOTIFYING
            error = run.error
        return PipelineStatus(
            **base,
            state=state,
            databricks=_run_view(run.run if run else None),
            result=result,
            error=error,
            updated_at=_iso(updated),
        )

    # ── cancel ───────────────────────────────────────────────────────────

    async def cancel(self, root: PromiseRecord) -> PipelineStatus:
        """Settle the pipeline as cancelled; the worker then cancels the run and emails."""
        pipeline_id = root.id
        spec = _spec_of(root)
        if root.state != "pending":
            state = (await self._status_of(root, spec)).state
            raise PipelineAlreadyFinished(f"pipeline {pipeline_id!r} already finished: {state.value}")

        promise_id = ids.callback_promise_id(pipeline_id)
        cancel = Settlement(
            status="cancelled",
            error=RunError(type="Cancelled", message="cancelled at the user's request"),
            source="user",
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

    # ── callback ─────────────────────────────────────────────────────────

    async def settle_from_callback(self, callback: CallbackRequest) -> tuple[str, bool]:
        """Settle the pipeline with the notebook's report; the signature is already checked.

        Returns the pipeline id and whether this callback settled it (False:
        it repeated the recorded outcome).
        """
        pipeline_id = ids.pipeline_id_of(callback.promise_id)
        # Only a pipeline's callback promise can be settled here; checking the
        # shape first also keeps arbitrary bytes out of requests to Resonate.
        if not PIPELINE_ID.fullmatch(pipeline_id) or callback.promise_id != ids.callback_promise_id(pipeline_id):
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


def _spec_of(root: PromiseRecord) -> PipelineSpec:
    data = root.param.data
    try:
        if not isinstance(data, dict) or data.get("func") != names.RUN_PIPELINE:
            raise ValueError(f"not a pipeline: {data!r:.200}")
        return PipelineSpec.model_validate(data["args"][0])
    except (ValueError, KeyError, IndexError, TypeError, ValidationError) as exc:
        # An id taken by something other than a pipeline (or a corrupted
        # record): never start a second thing under it.
        raise PipelineConflict(f"id {root.id!r} belongs to something that is not a pipeline") from exc


def _differences(stored: PipelineSpec, requested: PipelineSpec) -> list[str]:
    return [name for name in PipelineSpec.model_fields if getattr(stored, name) != getattr(requested, name)]


def _run_view(run: Any) -> DatabricksRunView | None:
    return DatabricksRunView(run_id=run.run_id, run_page_url=run.run_page_url) if run is not None else None
