"""What the building blocks' child workflows are called with: a job run's target, a gate's call.

Plain values, kept apart so the steps, the job runs and the blocks can all
name them without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobTarget:
    """What one run of a job is for: whose pipeline, which step, which job, with what."""

    pipeline_id: str
    #: The id its promises hang off: the pipeline's (a one-job workflow) or its step's (``P:N``).
    base: str
    #: The step's id (``N``); None for a one-job workflow.
    step: str | None
    #: The step's name (the job's, unless the pipeline's code named it).
    name: str
    job: str
    parameters: dict[str, str]
    email: str
    timeout_seconds: int
    #: The job as the start named it (None: a spec stored before the catalogue, the default job).
    catalogue_name: str | None = None
    #: Whether the trigger step also schedules the run's first watchdog check (a job step of
    #: runner version 3), rather than a step of its own after it (the versions before).
    watch_from_trigger: bool = False


@dataclass(frozen=True)
class GateCall:
    """What an approval gate is: the arguments of its child workflow (see :mod:`.runner`)."""

    pipeline_id: str
    step: str
    name: str
    message: str
    scopes: tuple[str, ...]
    deadline_seconds: int
    notify: tuple[str, ...]
    pipeline: str
    pipeline_title: str
    parameters: dict[str, str]
