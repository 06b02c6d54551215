"""What a caller may start (standalone jobs and pipelines), with their parameters: what a start request needs."""

from __future__ import annotations

from fastapi import APIRouter

from pipeline_shared.catalogue import Catalogue, Completion, PipelineEntry
from pipeline_shared.schedules import next_firing_at

from ..deps import CatalogueDep, Reader
from ..domain.access import may_start
from ..routing import AUTHENTICATED_RESPONSES, responses
from ..schemas import JobList, JobView, ParameterView

router = APIRouter(tags=["jobs"])


@router.get(
    "/jobs",
    response_model=JobList,
    responses=responses(*AUTHENTICATED_RESPONSES),
    summary="The catalogue's jobs you may start, with their parameters",
)
async def list_jobs(principal: Reader, catalogue: CatalogueDep) -> JobList:
    return JobList(
        jobs=[
            JobView(
                name=entry.name,
                title=entry.title,
                description=entry.description,
                default=entry.name == catalogue.default,
                completion=_completion(catalogue, entry),
                default_timeout_seconds=entry.default_timeout_seconds,
                max_timeout_seconds=entry.max_timeout_seconds,
                parameters=[
                    ParameterView(
                        name=name,
                        description=parameter.description,
                        required=parameter.required,
                        default=parameter.default,
                        pattern=parameter.pattern,
                        allowed=list(parameter.allowed) if parameter.allowed else None,
                        max_length=parameter.max_length,
                        url=parameter.url,
                        path=parameter.path,
                        integer=parameter.integer,
                        allow_empty=parameter.allow_empty,
                    )
                    for name, parameter in entry.parameters.items()
                ],
                kind="pipeline" if entry.name in catalogue.pipelines else "job",
                jobs=list(entry.jobs),
                version=entry.version,
                schedule=entry.schedule.cron if entry.schedule else None,
                next_firing_at=next_firing_at(entry),
            )
            for entry in catalogue.startable.values()
            if may_start(principal, entry)
        ]
    )


def _completion(catalogue: Catalogue, entry: PipelineEntry) -> Completion:
    """How the entry's runs report: a job's own way; a pipeline's first job's (each step reports as its job does)."""
    return catalogue.job(entry.jobs[0]).completion
