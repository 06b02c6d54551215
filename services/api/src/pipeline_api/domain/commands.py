"""What the gateway is asked to do, once the caller is known to be allowed: the domain's command types.

Built by :mod:`.access` (the JSON routes reach it through :mod:`pipeline_api.deps`, the web page
directly) and carried out by :class:`~.pipelines.Pipelines`. Plain data: no HTTP, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from resonate.types import PromiseRecord

from pipeline_shared.catalogue import PipelineEntry

from ..auth.principals import Principal
from ..schemas import PipelineRequest


@dataclass(frozen=True)
class OwnedPipeline:
    """A pipeline's root promise, read for a principal that may see it."""

    root: PromiseRecord
    principal: Principal


@dataclass(frozen=True)
class StartRequest:
    """A start request checked against the catalogue, for a principal that may start its job."""

    request: PipelineRequest
    principal: Principal
    #: The catalogue entry it starts (a pipeline, or a standalone job's own), its parameters with defaults
    #: filled in, its timeout.
    job: PipelineEntry
    parameters: dict[str, str]
    timeout_seconds: int


@dataclass(frozen=True)
class Abandon:
    """An abandon of a pipeline the caller may cancel; for one run by its code, of the job step named (if any)."""

    pipeline: OwnedPipeline
    step: str | None = None


@dataclass(frozen=True)
class Approval:
    """An approve or reject of a pipeline the caller may see, at the gate named (if any), with a comment."""

    pipeline: OwnedPipeline
    gate: str | None
    comment: str


@dataclass(frozen=True)
class Repair:
    """A repair of a pipeline the caller may cancel, with the parameters it reruns with."""

    pipeline: OwnedPipeline
    parameters: dict[str, str]
    #: For a pipeline run by its code: the job step (id or name) named, if any.
    step: str | None = None
