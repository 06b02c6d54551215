"""Who may do what, decided once for the JSON routes and the web page alike.

- :func:`may_start`: whether a principal may start a job (its catalogue entry names the scopes).
- :func:`visible`: a pipeline's root, read for a principal that may see it; another principal's
  pipeline is :class:`PipelineNotFound` exactly like one that does not exist.
- :func:`checked_start`: the one decision of what may be started: the job, the caller's scope for
  it, its parameters and timeout, the recipient's domain.

Each refusal is told to ``audit`` (the caller's HTTP layer writes it as an audit line with the
request's method and path) before it is raised. Problems with what was sent are
:class:`InvalidRequest`, in the shape FastAPI's request validation uses, so that both HTTP faces
can answer them as they answer any invalid body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline_shared.catalogue import Catalogue, InvalidParameters, Job, ParameterProblem, PipelineEntry, UnknownJob
from pipeline_shared.errors import InsufficientScope, PipelineError, PipelineNotFound
from pipeline_shared.schedules import scheduled_name

from ..auth.principals import Principal, Scope
from ..schemas import PipelineRequest
from .commands import OwnedPipeline, Repair, StartRequest
from .limits import RecipientDomains
from .pipelines import Pipelines, owner_of

#: Writes one refusal to the audit log: the error, who was refused (if known), and why.
Audit = Callable[[PipelineError, Principal | None, str], None]


class InvalidRequest(Exception):
    """What was sent does not fit: each problem with its ``type``, ``loc`` (where) and ``msg``."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(problems)
        self.problems = problems


def may_start(principal: Principal, job: Job | PipelineEntry) -> bool:
    """Whether ``principal`` holds one of the scopes ``job`` (a catalogue entry) may be started with."""
    return any(principal.allows(Scope(scope)) for scope in job.start_scopes)


async def visible(
    pipelines: Pipelines,
    principal: Principal,
    pipeline_id: str,
    audit: Audit,
    *,
    gates: bool = False,
    deciding: bool = False,
) -> OwnedPipeline:
    """The pipeline's root for ``principal``; PipelineNotFound if there is none or it is another principal's.

    With ``gates`` (reading it), another principal's pipeline is visible too
    while one of its open approval gates names a scope ``principal`` holds:
    whoever is asked to decide may see what about. With ``deciding`` (an
    approve or reject), any gate of it naming such a scope will do, so that
    a second decision is told the gate was decided (409), not that the
    pipeline is gone (404).
    """
    root = await pipelines.root(pipeline_id)
    granted = gates or deciding
    if not principal.may_see(owner_of(root)) and not (
        granted and await pipelines.gate_grants(root, principal, deciding=deciding)
    ):
        # The same answer as for no pipeline at all: whether the id is taken is not the caller's to know.
        refusal = PipelineNotFound(pipeline_id)
        audit(refusal, principal, "the pipeline belongs to another principal")
        raise refusal
    return OwnedPipeline(root, principal)


def invalid_parameters(exc: InvalidParameters) -> InvalidRequest:
    """Each parameter (or the timeout) that does not fit the job, at its field."""

    def where(problem: ParameterProblem) -> tuple[str, ...]:
        return ("body", "parameters", problem.name) if exc.field == "parameters" else ("body", exc.field)

    def says(problem: ParameterProblem) -> str:
        declared = f"; its parameters: {', '.join(problem.declared) or 'none'}" if problem.declared is not None else ""
        return f"{problem.problem} (job {exc.job!r}){declared}"

    return InvalidRequest([{"type": "invalid_parameter", "loc": where(p), "msg": says(p)} for p in exc.problems])


def checked_start(
    catalogue: Catalogue,
    recipients: RecipientDomains,
    principal: Principal,
    document: PipelineRequest,
    audit: Audit,
) -> StartRequest:
    """A well-formed start request checked against the catalogue: its job, the caller's scope for it, its values.

    The one decision of what may be started, for the JSON route and the web page's form alike, the
    operator's recipient domains included. Raises InvalidRequest (each problem at its field) or
    InsufficientScope.
    """
    try:
        job = catalogue.pipeline(document.job)
    except UnknownJob as exc:
        raise InvalidRequest([{"type": "unknown_job", "loc": ("body", "job"), "msg": str(exc)}]) from None
    if not may_start(principal, job):
        refusal = InsufficientScope(" ".join(job.start_scopes))
        needed = " or ".join(repr(scope) for scope in job.start_scopes)
        refusal.message = f"starting job {job.name!r} needs the {needed} scope, which your credentials do not grant"
        audit(refusal, principal, f"may not start job {job.name}")
        raise refusal
    try:
        parameters = job.resolve(document.parameters)
        timeout = job.timeout(document.timeout_seconds)
    except InvalidParameters as exc:
        raise invalid_parameters(exc) from None
    refused = recipients.refusal(str(document.email))
    if refused is not None:
        raise InvalidRequest([{"type": "recipient_not_allowed", "loc": ("body", "email"), "msg": refused}])
    if document.id is not None and (scheduled := scheduled_name(document.id, catalogue)) is not None:
        taken = f"ids {scheduled}-yyyymmddThhmm are for the runs of pipeline {scheduled!r}'s schedule; choose another"
        raise InvalidRequest([{"type": "scheduled_id", "loc": ("body", "id"), "msg": taken}])
    return StartRequest(document, principal, job, parameters, timeout)


async def checked_repair(
    pipelines: Pipelines, pipeline: OwnedPipeline, changes: dict[str, str], step: str | None = None
) -> Repair:
    """A repair of ``pipeline`` (of its job step ``step``) with ``changes`` to its parameters, checked as at start."""
    try:
        parameters = await pipelines.parameters_for_repair(pipeline.root, changes, step)
    except InvalidParameters as exc:
        raise invalid_parameters(exc) from None
    return Repair(pipeline, parameters, step)
