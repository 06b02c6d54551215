"""Every error a client of the JSON API sees: JSON with a stable ``code`` and a human ``message``.

The domain raises the shared library's errors (:mod:`pipeline_shared.errors`); :data:`STATUS_BY_ERROR`
says which HTTP status each one is, and :data:`ERROR_HANDLERS` answers them, FastAPI's own (an invalid
request, an unknown route) and anything unexpected, for both listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from pipeline_shared.errors import (
    AccessRefused,
    AuthenticationUnavailable,
    CallbackConflict,
    CallbackUnauthorized,
    CoordinatorUnavailable,
    GateAmbiguous,
    GateNotOpen,
    IndexUnavailable,
    InsufficientScope,
    InvalidCallback,
    InvalidCredentials,
    InvalidListQuery,
    InvalidNotification,
    MayNotDecide,
    NotAwaitingRepair,
    NotificationsDisabled,
    NotificationUnauthorized,
    PipelineAlreadyFinished,
    PipelineAwaitingRepair,
    PipelineConflict,
    PipelineError,
    PipelineNotFound,
    StartLimited,
    StartRateLimited,
    StepAmbiguous,
    TooManyWaiting,
    Unauthenticated,
    UnknownCallbackPromise,
)

from . import metrics
from .auth.authenticator import challenge
from .domain.callbacks import CALLBACK_PATH
from .schemas import ErrorBody

logger = logging.getLogger("pipeline_api")

STATUS_BY_ERROR: dict[type[PipelineError], int] = {
    PipelineNotFound: 404,
    PipelineConflict: 409,
    PipelineAlreadyFinished: 409,
    InvalidCallback: 422,
    CallbackUnauthorized: 401,
    UnknownCallbackPromise: 404,
    CallbackConflict: 409,
    CoordinatorUnavailable: 503,
    Unauthenticated: 401,
    InvalidCredentials: 401,
    InsufficientScope: 403,
    AuthenticationUnavailable: 503,
    NotificationsDisabled: 404,
    NotAwaitingRepair: 409,
    PipelineAwaitingRepair: 409,
    NotificationUnauthorized: 401,
    InvalidNotification: 422,
    IndexUnavailable: 503,
    InvalidListQuery: 422,
    StartRateLimited: 429,
    TooManyWaiting: 429,
    GateNotOpen: 409,
    GateAmbiguous: 409,
    StepAmbiguous: 409,
    MayNotDecide: 403,
}

#: Told to clients with every 503 (the Resonate database or the identity
#: provider cannot be reached): about how long a database restart takes.
RETRY_AFTER_SECONDS = 5
RETRY_LATER = {"Retry-After": str(RETRY_AFTER_SECONDS)}


def status_of(exc: PipelineError) -> int:
    return STATUS_BY_ERROR.get(type(exc), 500)


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, details=details)
    return JSONResponse(jsonable_encoder(body, exclude_none=True), status_code=status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PipelineError)
    status = status_of(exc)
    if request.url.path == CALLBACK_PATH:
        metrics.CALLBACK_REJECTIONS.labels(reason=exc.code).inc()
        if status == 401:
            logger.info("callback refused", extra={"fields": {"code": exc.code, "path": request.url.path}})
    if status >= 500:
        logger.error("request failed: %s", exc.message)
    headers = challenge(exc) if isinstance(exc, AccessRefused) else None
    if isinstance(exc, NotificationUnauthorized):
        headers = {"WWW-Authenticate": 'Basic realm="databricks-notifications"'}
    if status == 503:
        # The database or the identity provider is away; say when to try again.
        headers = (headers or {}) | RETRY_LATER
    if isinstance(exc, StartLimited):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
    return error_response(status, exc.code, exc.message, exc.details, headers=headers)


async def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"]) or "request"
    return error_response(422, "invalid_request", f"{where}: {first['msg']}", details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.detail, dict):
        if request.url.path == CALLBACK_PATH:
            metrics.CALLBACK_REJECTIONS.labels(reason=exc.detail["code"]).inc()
        return error_response(exc.status_code, exc.detail["code"], exc.detail["message"])
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot decode at all (not UTF-8,
        # say); to a client that is invalid input like any other.
        return error_response(422, "invalid_request", f"body: {exc.detail} (send UTF-8 JSON)")
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    # Keep the exception's headers: a 405 must say what is Allowed.
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _too_deep(_: Request, exc: Exception) -> JSONResponse:
    return error_response(422, "invalid_request", "body: the JSON is nested too deeply")


async def client_went_away(request: Request, _: Exception) -> JSONResponse:
    """A client that closed its connection before sending its whole body: routine on a public listener.

    One INFO line, no traceback; nothing was read, so nothing was done. The
    answer goes nowhere (uvicorn drops what is sent on a closed connection).
    """
    logger.info(
        "the client went away before sending its whole request; nothing was done",
        extra={"fields": {"method": request.method, "path": request.url.path}},
    )
    return error_response(400, "client_disconnected", "the request body ended before it was complete")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error")
    return error_response(500, "internal_error", "the gateway failed unexpectedly; the request may be retried")


ERROR_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Coroutine[Any, Any, JSONResponse]]] = {
    PipelineError: _domain_error,
    RequestValidationError: _invalid_request,
    StarletteHTTPException: _http_error,
    RecursionError: _too_deep,
    ClientDisconnect: client_went_away,
    Exception: _unexpected,
}
