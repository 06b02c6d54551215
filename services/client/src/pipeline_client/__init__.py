"""A typed client for the pipelines gateway, for backends: start a pipeline, wait for it, read its story.

    from pipeline_client import Client

    client = Client("http://127.0.0.1:8000", api_key="pl_...")
    pipeline = client.start(job="csv-statistics", email="you@example.com",
                            parameters={"source": "/Workspace/Shared/pipelines/samples/customers.csv"})
    done = client.wait(pipeline.id, timeout=600)
    print(done.state, done.result)

:class:`AsyncClient` is the same with ``await``. It depends on httpx, pydantic
and httpx-sse only; never on the gateway. The ``pipelines`` command
(``pipeline_client.cli``) needs the ``cli`` extra.
"""

from .aio import AsyncClient
from .client import Client
from .errors import (
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidRequest,
    NotFound,
    PipelineError,
    RateLimited,
    Unauthorized,
    Unavailable,
    WaitTimedOut,
)
from .models import (
    FINAL_STATES,
    Approval,
    ApprovalDecision,
    Job,
    PipelineEvent,
    PipelinePage,
    PipelineState,
    PipelineStatus,
    PipelineSummary,
    PipelineTimeline,
    Step,
    StepKind,
    StepRun,
    StepState,
)

__all__ = [
    "FINAL_STATES",
    "Approval",
    "ApprovalDecision",
    "AsyncClient",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "InvalidRequest",
    "Job",
    "NotFound",
    "PipelineError",
    "PipelineEvent",
    "PipelinePage",
    "PipelineState",
    "PipelineStatus",
    "PipelineSummary",
    "PipelineTimeline",
    "RateLimited",
    "Step",
    "StepKind",
    "StepRun",
    "StepState",
    "Unauthorized",
    "Unavailable",
    "WaitTimedOut",
]
