"""Request dependencies: what routes may use, built once by the lifespan.

They are ``async def`` although they only read ``app.state``: FastAPI runs a
plain ``def`` dependency in a worker thread, which cost the callback route two
thread hand-offs per request (about a fifth of its CPU under load, measured
by tests/benchmark). The callback route, the hottest, takes none at all
(see app.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pipeline_shared.resonate_client import ResonateLink

from .pipelines import Pipelines


async def _link(request: Request) -> ResonateLink:
    return request.app.state.link


async def _pipelines(request: Request) -> Pipelines:
    return request.app.state.pipelines


LinkDep = Annotated[ResonateLink, Depends(_link)]
PipelinesDep = Annotated[Pipelines, Depends(_pipelines)]
