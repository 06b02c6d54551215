"""What every page module is handed when it adds its pages: the app, its settings, and the dependencies
that give a page its session with the scope it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from pipeline_shared.errors import PipelineError

from ..settings import GatewaySettings
from .rendering import Pages
from .sessions import SessionCookies


@dataclass(frozen=True)
class Ui:
    app: FastAPI
    settings: GatewaySettings
    pages: Pages
    cookies: SessionCookies
    #: Annotated[Session, Depends(...)]: a signed-in session whose scopes allow reading, starting, cancelling.
    reader: Any
    starter: Any
    canceller: Any
    #: A session that may read one pipeline: with ``read``, or with ``approve`` (the domain then asks for an
    #: open gate of it naming a scope the session holds).
    pipeline_reader: Any
    #: A decorator adding a page anyone may open (see PublicPage).
    public: Callable[[str, str], Callable[[Callable[..., Any]], Callable[..., Any]]]
    #: The HTTP status the JSON API answers a domain error with.
    status_of: Callable[[PipelineError], int]
