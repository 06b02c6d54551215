"""Request bodies the gateway reads itself, after deciding the caller may send them.

FastAPI reads a declared body parameter before running any dependency, so a stranger's body would
be parsed before authentication. The start and repair bodies are read here instead, from the
dependencies in :mod:`.deps`, and their problems are the same 422 documents FastAPI's would be.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from .domain.access import InvalidRequest

#: The problem told when a body is sent as anything but JSON.
NOT_JSON = {"type": "content_type", "loc": ("body",), "msg": "send JSON, with content-type: application/json"}


def is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def parsed[Model: BaseModel](model: type[Model], content_type: str, body: bytes) -> Model:
    """``body`` as ``model``, or RequestValidationError naming each problem under ``body``."""
    if not is_json(content_type):
        raise RequestValidationError([NOT_JSON])
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


async def read_json[Model: BaseModel](request: Request, model: type[Model]) -> Model:
    """The request's body as ``model``; its content type is checked before the body is read."""
    content_type = request.headers.get("content-type", "")
    if not is_json(content_type):
        raise RequestValidationError([NOT_JSON])
    return parsed(model, content_type, await request.body())


async def optional_json[Model: BaseModel](request: Request, model: type[Model]) -> Model:
    """The request's body as ``model``, when it has one; an empty body is the model's defaults."""
    body = await request.body()
    return parsed(model, request.headers.get("content-type", ""), body) if body.strip() else model()


def as_validation_error(exc: InvalidRequest) -> RequestValidationError:
    """The domain's InvalidRequest as the 422 FastAPI answers for any invalid request."""
    return RequestValidationError(exc.problems)
