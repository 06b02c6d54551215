"""The catalogue's jobs a caller may start, with their parameters: what a client needs to fill a start request."""

from __future__ import annotations

from fastapi import APIRouter

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
                name=job.name,
                title=job.title,
                description=job.description,
                default=job.name == catalogue.default,
                completion=job.completion,
                default_timeout_seconds=job.default_timeout_seconds,
                max_timeout_seconds=job.max_timeout_seconds,
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
                    for name, parameter in job.parameters.items()
                ],
            )
            for job in catalogue.jobs.values()
            if may_start(principal, job)
        ]
    )
