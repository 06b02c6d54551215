"""Request dependencies: what routes may use, and the one place access is decided.

Access, in the order a request meets it, each step before the next reads anything:

1. :func:`authenticate` is the app's default dependency, so every route runs
   it, including one added later that forgets to ask (only the routes made
   with ``PublicRoute`` in app.py are exempt: the health checks and the
   signed callback). No credentials or wrong ones: 401, before the body is
   read and before any request to Resonate.
2. :func:`allowed` checks the scope the route needs: 403. A route that names
   no scope does not get past ``create_app`` (see app.py).
3. The pipeline dependencies (:data:`ReadablePipeline` and the others) read
   the pipeline's root promise and hand it to the route only if the caller
   may see it; another principal's pipeline is a 404 exactly like a pipeline
   that does not exist. The start route's body is read only at this step too
   (:data:`AuthorizedStart`), after the caller is known to be allowed to start.

Route bodies never check access themselves. Starting is the one decision
that cannot be made here, because whose an id is is known only from the
answer to the create; ``Pipelines.start`` makes it with the same rule
(:meth:`Principal.may_see`).

They are ``async def`` although most only read ``app.state``: FastAPI runs a
plain ``def`` dependency in a worker thread, which cost the callback route two
thread hand-offs per request (about a fifth of its CPU under load, measured
by tests/benchmark). The callback route, the hottest, takes none at all
(see app.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from resonate.types import PromiseRecord

from pipeline_shared.catalogue import Catalogue, InvalidParameters, Job, ParameterProblem, UnknownJob
from pipeline_shared.errors import AccessRefused, IndexUnavailable, InsufficientScope, PipelineNotFound
from pipeline_shared.models import PIPELINE_ID_PATTERN
from pipeline_shared.resonate_client import ResonateLink

from .auth.authenticator import Authenticator, audit_refusal, missing_credentials
from .auth.principals import Principal, Scope
from .domain.limits import RecipientDomains
from .domain.pipelines import Pipelines, owner_of
from .index.queries import PipelineIndex
from .schemas import PipelineRequest, RepairRequest

PipelineIdPath = Annotated[str, Path(pattern=PIPELINE_ID_PATTERN, description="The pipeline id.")]
PipelineIdQuery = Annotated[str, Query(alias="id", pattern=PIPELINE_ID_PATTERN, description="The pipeline id.")]

#: Documents the scheme in OpenAPI and reads the header; deciding is authenticate's.
bearer = HTTPBearer(
    auto_error=False,
    description="An API key of this gateway (pl_...) or an OIDC access token from the configured issuer.",
)


async def _link(request: Request) -> ResonateLink:
    return request.app.state.link


async def _pipelines(request: Request) -> Pipelines:
    return request.app.state.pipelines


async def _index(request: Request) -> PipelineIndex:
    index: PipelineIndex | None = request.app.state.index
    if index is None:
        raise IndexUnavailable("the pipeline index needs the resonate-pg database, and this gateway runs without one")
    return index


LinkDep = Annotated[ResonateLink, Depends(_link)]
IndexDep = Annotated[PipelineIndex, Depends(_index)]
PipelinesDep = Annotated[Pipelines, Depends(_pipelines)]


# ── 1. who is calling ────────────────────────────────────────────────────────


async def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The caller, or 401. Every route runs this first: it is the app's default dependency."""
    if credentials is None:
        refusal = missing_credentials(request.headers.get("authorization"))
        audit_refusal(request, refusal, None, refusal.message)
        raise refusal
    authenticator: Authenticator = request.app.state.authenticator
    try:
        return await authenticator.principal_for(credentials.credentials)
    except AccessRefused as refusal:
        audit_refusal(request, refusal, None, refusal.message)
        raise


# ── 2. may it do this ────────────────────────────────────────────────────────


def allowed(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if its scopes grant ``scope``; 403 otherwise."""

    async def principal_with_scope(
        request: Request, principal: Annotated[Principal, Depends(authenticate)]
    ) -> Principal:
        if not principal.allows(scope):
            refusal = InsufficientScope(scope.value)
            audit_refusal(request, refusal, principal, f"lacks the {scope.value} scope")
            raise refusal
        return principal

    principal_with_scope.required_scope = scope  # type: ignore[attr-defined]  # read by create_app's check
    return principal_with_scope


Starter = Annotated[Principal, Depends(allowed(Scope.START))]
Reader = Annotated[Principal, Depends(allowed(Scope.READ))]
Canceller = Annotated[Principal, Depends(allowed(Scope.CANCEL))]


# ── 3. on which pipeline ─────────────────────────────────────────────────────


@dataclass(frozen=True)
class OwnedPipeline:
    """A pipeline's root promise, read for a principal that may see it."""

    root: PromiseRecord
    principal: Principal


async def visible(request: Request, principal: Principal, pipeline_id: str) -> OwnedPipeline:
    """The pipeline's root for ``principal``; PipelineNotFound if there is none or it is another principal's."""
    pipelines: Pipelines = request.app.state.pipelines
    root = await pipelines.root(pipeline_id)
    if not principal.may_see(owner_of(root)):
        # The same answer as for no pipeline at all: whether the id is taken is not the caller's to know.
        refusal = PipelineNotFound(pipeline_id)
        audit_refusal(request, refusal, principal, "the pipeline belongs to another principal")
        raise refusal
    return OwnedPipeline(root, principal)


async def _readable(request: Request, pipeline_id: PipelineIdPath, principal: Reader) -> OwnedPipeline:
    return await visible(request, principal, pipeline_id)


async def _readable_by_query(request: Request, pipeline_id: PipelineIdQuery, principal: Reader) -> OwnedPipeline:
    return await visible(request, principal, pipeline_id)


async def _cancellable(request: Request, pipeline_id: PipelineIdPath, principal: Canceller) -> OwnedPipeline:
    return await visible(request, principal, pipeline_id)


ReadablePipeline = Annotated[OwnedPipeline, Depends(_readable)]
ReadablePipelineByQuery = Annotated[OwnedPipeline, Depends(_readable_by_query)]
CancellablePipeline = Annotated[OwnedPipeline, Depends(_cancellable)]


@dataclass(frozen=True)
class StartRequest:
    request: PipelineRequest
    principal: Principal
    #: The catalogue entry it starts, its parameters with defaults filled in, its timeout.
    job: Job
    parameters: dict[str, str]
    timeout_seconds: int


async def _catalogue(request: Request) -> Catalogue:
    return request.app.state.settings.catalogue


CatalogueDep = Annotated[Catalogue, Depends(_catalogue)]


def may_start(principal: Principal, job: Job) -> bool:
    """Whether ``principal`` holds one of the scopes ``job`` may be started with."""
    return any(principal.allows(Scope(scope)) for scope in job.start_scopes)


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def _invalid(exc: InvalidParameters) -> RequestValidationError:
    """A 422 naming each parameter (or the timeout) that does not fit the job."""

    def where(problem: ParameterProblem) -> tuple[str, ...]:
        return ("body", "parameters", problem.name) if exc.field == "parameters" else ("body", exc.field)

    def says(problem: ParameterProblem) -> str:
        declared = f"; its parameters: {', '.join(problem.declared) or 'none'}" if problem.declared is not None else ""
        return f"{problem.problem} (job {exc.job!r}){declared}"

    return RequestValidationError(
        [{"type": "invalid_parameter", "loc": where(p), "msg": says(p)} for p in exc.problems]
    )


async def _start_request(request: Request, principal: Starter) -> StartRequest:
    """The start request's body, read only once the caller may start pipelines.

    Read here rather than declared as the route's body parameter, which FastAPI
    would read and parse before running any dependency: a stranger's body is
    never parsed. Errors are the same 422 documents FastAPI's would be.
    """
    if not _is_json(request.headers.get("content-type", "")):
        raise RequestValidationError(
            [{"type": "content_type", "loc": ("body",), "msg": "send JSON, with content-type: application/json"}]
        )
    try:
        document = PipelineRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None
    return checked_start(request, principal, document)


def checked_start(request: Request, principal: Principal, document: PipelineRequest) -> StartRequest:
    """A well-formed start request checked against the catalogue: its job, the caller's scope for it, its values.

    The one decision of what may be started, for the JSON route and the web
    page's form alike, the operator's recipient domains included. Raises RequestValidationError (422, each problem at
    its field) or InsufficientScope.
    """
    catalogue: Catalogue = request.app.state.settings.catalogue
    try:
        job = catalogue.job(document.job)
    except UnknownJob as exc:
        raise RequestValidationError([{"type": "unknown_job", "loc": ("body", "job"), "msg": str(exc)}]) from None
    if not may_start(principal, job):
        refusal = InsufficientScope(" ".join(job.start_scopes))
        needed = " or ".join(repr(scope) for scope in job.start_scopes)
        refusal.message = f"starting job {job.name!r} needs the {needed} scope, which your credentials do not grant"
        audit_refusal(request, refusal, principal, f"may not start job {job.name}")
        raise refusal
    try:
        parameters = job.resolve(document.parameters)
        timeout = job.timeout(document.timeout_seconds)
    except InvalidParameters as exc:
        raise _invalid(exc) from None
    recipients: RecipientDomains = request.app.state.recipient_domains
    refused = recipients.refusal(str(document.email))
    if refused is not None:
        raise RequestValidationError([{"type": "recipient_not_allowed", "loc": ("body", "email"), "msg": refused}])
    return StartRequest(document, principal, job, parameters, timeout)


AuthorizedStart = Annotated[StartRequest, Depends(_start_request)]


@dataclass(frozen=True)
class Repair:
    """A repair of a pipeline the caller may cancel, with the parameters it reruns with."""

    pipeline: OwnedPipeline
    parameters: dict[str, str]


async def _repair_request(request: Request, pipeline: CancellablePipeline) -> Repair:
    """The repair request's body (optional), read only once the caller may decide about this pipeline."""
    body = await request.body()
    document = RepairRequest()
    if body.strip():
        if not _is_json(request.headers.get("content-type", "")):
            raise RequestValidationError(
                [{"type": "content_type", "loc": ("body",), "msg": "send JSON, with content-type: application/json"}]
            )
        try:
            document = RepairRequest.model_validate_json(body)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
            ) from None
    pipelines: Pipelines = request.app.state.pipelines
    try:
        parameters = await pipelines.parameters_for_repair(pipeline.root, document.parameters)
    except InvalidParameters as exc:
        raise _invalid(exc) from None
    return Repair(pipeline, parameters)


AuthorizedRepair = Annotated[Repair, Depends(_repair_request)]
