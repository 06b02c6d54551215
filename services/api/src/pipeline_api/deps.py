"""Request dependencies: the ``Annotated`` getters routes take their arguments from, and nothing else.

Access, in the order a request meets it, each step before the next reads anything:

1. :func:`authenticate` is the app's default dependency, so every route runs
   it, including one added later that forgets to ask (only the routes made
   with ``PublicRoute`` in :mod:`.routing` are exempt: the health checks and the
   signed callback). No credentials or wrong ones: 401, before the body is
   read and before any request to Resonate.
2. :func:`allowed` checks the scope the route needs: 403. A route that names
   no scope does not get past ``create_app`` (see :mod:`.routing`).
3. The pipeline dependencies (:data:`ReadablePipeline` and the others) read
   the pipeline's root promise and hand it to the route only if the caller
   may see it (:func:`pipeline_api.domain.access.visible`). The start route's
   body is read only at this step too (:data:`AuthorizedStart`), after the
   caller is known to be allowed to start.

Route bodies never check access themselves; the rules are the domain's
(:mod:`pipeline_api.domain.access`), and these getters apply them. Starting is
the one decision that cannot be made here, because whose an id is is known
only from the answer to the create; ``Pipelines.start`` makes it with the same
rule (:meth:`Principal.may_see`).

They are ``async def`` although most only read ``app.state``: FastAPI runs a
plain ``def`` dependency in a worker thread, which cost the callback route two
thread hand-offs per request (about a fifth of its CPU under load, measured
by tests/benchmark). The callback route, the hottest, takes none at all
(see :mod:`.routes.callbacks`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline_shared.catalogue import Catalogue
from pipeline_shared.errors import AccessRefused, IndexUnavailable, InsufficientScope
from pipeline_shared.models import PIPELINE_ID_PATTERN
from pipeline_shared.resonate_client import ResonateLink

from .auth.authenticator import Authenticator, audit_refusal, missing_credentials
from .auth.principals import Principal, Scope
from .bodies import as_validation_error, optional_json, read_json
from .domain.access import InvalidRequest, checked_repair, checked_start, visible
from .domain.commands import Abandon, Approval, OwnedPipeline, Repair, StartRequest
from .domain.pipelines import Pipelines
from .index.queries import PipelineIndex
from .schemas import AbandonRequest, ApprovalRequest, PipelineRequest, RepairRequest

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


async def _catalogue(request: Request) -> Catalogue:
    return request.app.state.settings.catalogue


LinkDep = Annotated[ResonateLink, Depends(_link)]
IndexDep = Annotated[PipelineIndex, Depends(_index)]
PipelinesDep = Annotated[Pipelines, Depends(_pipelines)]
CatalogueDep = Annotated[Catalogue, Depends(_catalogue)]


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


Authenticated = Annotated[Principal, Depends(authenticate)]


# ── 2. may it do this ────────────────────────────────────────────────────────


def allowed(scope: Scope, *alternatives: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if its scopes grant ``scope`` (or one of ``alternatives``); 403 otherwise."""

    async def principal_with_scope(request: Request, principal: Authenticated) -> Principal:
        if not any(principal.allows(each) for each in (scope, *alternatives)):
            refusal = InsufficientScope(scope.value)
            audit_refusal(request, refusal, principal, f"lacks the {scope.value} scope")
            raise refusal
        return principal

    principal_with_scope.required_scope = scope  # type: ignore[attr-defined]  # read by create_app's check
    return principal_with_scope


Starter = Annotated[Principal, Depends(allowed(Scope.START))]
Reader = Annotated[Principal, Depends(allowed(Scope.READ))]
Canceller = Annotated[Principal, Depends(allowed(Scope.CANCEL))]
#: Reads a pipeline: with ``read``, or with ``approve`` while one of its open gates names a scope it holds.
PipelineReader = Annotated[Principal, Depends(allowed(Scope.READ, Scope.APPROVE))]


async def gate_decider(principal: Authenticated) -> Principal:
    """The caller of an approve or reject: its scopes are checked against the gate's own, once it is known.

    A gate names the scopes that may decide it (``approve`` unless its code
    says otherwise), so the check is made by ``Pipelines.decide_gate``, after
    the pipeline is known to be visible (404 before 403, as everywhere).
    """
    return principal


gate_decider.required_scope = Scope.APPROVE  # type: ignore[attr-defined]  # the gates' default scope
GateDecider = Annotated[Principal, Depends(gate_decider)]


# ── 3. on which pipeline ─────────────────────────────────────────────────────


async def _readable(
    request: Request, pipeline_id: PipelineIdPath, principal: PipelineReader, pipelines: PipelinesDep
) -> OwnedPipeline:
    return await visible(pipelines, principal, pipeline_id, partial(audit_refusal, request), gates=True)


async def _readable_by_query(
    request: Request, pipeline_id: PipelineIdQuery, principal: Reader, pipelines: PipelinesDep
) -> OwnedPipeline:
    return await visible(pipelines, principal, pipeline_id, partial(audit_refusal, request))


async def _cancellable(
    request: Request, pipeline_id: PipelineIdPath, principal: Canceller, pipelines: PipelinesDep
) -> OwnedPipeline:
    return await visible(pipelines, principal, pipeline_id, partial(audit_refusal, request))


async def _decidable(
    request: Request, pipeline_id: PipelineIdPath, principal: GateDecider, pipelines: PipelinesDep
) -> OwnedPipeline:
    return await visible(pipelines, principal, pipeline_id, partial(audit_refusal, request), deciding=True)


ReadablePipeline = Annotated[OwnedPipeline, Depends(_readable)]
DecidablePipeline = Annotated[OwnedPipeline, Depends(_decidable)]
ReadablePipelineByQuery = Annotated[OwnedPipeline, Depends(_readable_by_query)]
CancellablePipeline = Annotated[OwnedPipeline, Depends(_cancellable)]


async def _start_request(request: Request, principal: Starter) -> StartRequest:
    """The start request's body, read only once the caller may start pipelines (see :mod:`.bodies`)."""
    document = await read_json(request, PipelineRequest)
    try:
        return checked_start(
            request.app.state.settings.catalogue,
            request.app.state.recipient_domains,
            principal,
            document,
            partial(audit_refusal, request),
        )
    except InvalidRequest as exc:
        raise as_validation_error(exc) from None


AuthorizedStart = Annotated[StartRequest, Depends(_start_request)]


async def _repair_request(request: Request, pipeline: CancellablePipeline, pipelines: PipelinesDep) -> Repair:
    """The repair request's body (optional), read only once the caller may decide about this pipeline."""
    document = await optional_json(request, RepairRequest)
    try:
        return await checked_repair(pipelines, pipeline, document.parameters, document.step)
    except InvalidRequest as exc:
        raise as_validation_error(exc) from None


async def _abandon_request(request: Request, pipeline: CancellablePipeline) -> Abandon:
    """The abandon request's body (optional: which job step), read once the caller may decide about it."""
    return Abandon(pipeline, (await optional_json(request, AbandonRequest)).step)


async def _approval_request(request: Request, pipeline: DecidablePipeline) -> Approval:
    """The approve or reject request's body (optional: which gate, a comment), read once the pipeline is visible."""
    document = await optional_json(request, ApprovalRequest)
    return Approval(pipeline, document.gate, document.comment)


AuthorizedRepair = Annotated[Repair, Depends(_repair_request)]
AuthorizedAbandon = Annotated[Abandon, Depends(_abandon_request)]
AuthorizedApproval = Annotated[Approval, Depends(_approval_request)]
