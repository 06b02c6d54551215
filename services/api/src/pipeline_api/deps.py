"""Request dependencies: what routes may use, built once by the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pipeline_shared.resonate_client import ResonateLink

from .pipelines import Pipelines
from .settings import GatewaySettings


def _settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def _link(request: Request) -> ResonateLink:
    return request.app.state.link


def _pipelines(request: Request) -> Pipelines:
    return request.app.state.pipelines


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
LinkDep = Annotated[ResonateLink, Depends(_link)]
PipelinesDep = Annotated[Pipelines, Depends(_pipelines)]
