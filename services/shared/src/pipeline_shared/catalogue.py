"""The job catalogue: which pipelines a client may start, and how each one runs.

One TOML file (``JOB_CATALOGUE_FILE``; the repository's is
``infra/catalogue.toml``), read at start by the gateway, which validates
requests against it and lists it at ``GET /jobs``, and by the worker, which
finds the Databricks job of each entry and knows from it how a run reports
its end. A catalogue that does not load stops the service with every problem
named, field by field.

A request's parameters are checked here, before anything is stored: every
parameter must be declared, every required one given, every value must be
what the parameter declares it is (a pattern, a set, or a typed rule of
:mod:`.parameter_rules`: a URL, a path, a whole number). The resolved
parameters (defaults filled in) are what the pipeline's spec records and what
the job receives. The gateway resolves at start and at repair, and the worker
checks again before Databricks is given a value (:meth:`Job.refusal`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from . import names
from .cron import parse_cron
from .parameter_rules import IntegerRule, PathRule, UrlRule, location_problem
from .recipients import RecipientAddress

#: A catalogue entry's name: what a client sends as ``"job"``.
JOB_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
#: A parameter name must survive as a Databricks job parameter, a widget, a
#: JSON key and a log field.
PARAMETER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$"
ParameterName = Annotated[str, StringConstraints(pattern=PARAMETER_NAME_PATTERN)]
JobName = Annotated[str, StringConstraints(pattern=JOB_NAME_PATTERN)]

#: The job parameters the pipeline itself sets on jobs that call back; no
#: catalogue parameter may take one of these names.
PIPELINE_PARAMETERS = (
    names.JOB_PARAM_PIPELINE_ID,
    names.JOB_PARAM_CALLBACK_PROMISE_ID,
    names.JOB_PARAM_CALLBACK_URL,
    names.JOB_PARAM_CALLBACK_SIGNING_KEY,
)

#: Databricks caps a run's job parameters at 10,000 bytes; the user's share
#: leaves room for the pipeline's own.
MAX_PARAMETERS_BYTES = 8_000

#: The longest a pipeline may wait for Databricks: the bound keeps a typo from
#: parking a pipeline for a century.
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600

#: The scopes a catalogue may name (the gateway's; see pipeline_api.auth.principals).
StartScope = Literal["start", "admin"]


class Completion(StrEnum):
    """How a run of the job tells the service it has ended."""

    #: The notebook calls back, signed (notebooks/pipeline_callback.py).
    CALLBACK = "callback"
    #: The job's webhook notifications reach the gateway; each one prompts a
    #: read of the run, which alone decides the outcome.
    NOTIFICATION = "notification"
    #: Nothing tells the service: it reads the run every watchdog interval.
    POLL = "poll"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Parameter(_Entry):
    """One parameter a client may (or must) give."""

    description: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    required: bool = False
    default: str | None = None
    #: A regular expression the whole value must match.
    pattern: str | None = None
    #: The values allowed, when they can be listed.
    allowed: tuple[str, ...] | None = Field(default=None, min_length=1)
    max_length: int = Field(default=MAX_PARAMETERS_BYTES, ge=1, le=MAX_PARAMETERS_BYTES)
    #: What it is, when more than text: a URL, a path (both: either), a whole number.
    url: UrlRule | None = None
    path: PathRule | None = None
    integer: IntegerRule | None = None
    #: Whether "" is accepted whatever the typed rule (the job then uses its own fallback).
    allow_empty: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.required == (self.default is not None):
            raise ValueError("a parameter is either required or has a default, not both and not neither")
        if self.integer is not None and (self.url, self.path, self.allowed) != (None, None, None):
            raise ValueError("an integer parameter is neither a URL, a path nor a set of allowed values")
        if self.allowed is not None and (self.url, self.path) != (None, None):
            raise ValueError("give a URL or path rule or a set of allowed values, not both")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from None
        if self.pattern is not None and self.allowed is not None:
            raise ValueError("give a pattern or a set of allowed values, not both")
        if self.default is not None and (problem := self.problem_with(self.default)):
            raise ValueError(f"the default {self.default!r} is itself invalid: {problem}")
        return self

    def problem_with(self, value: str) -> str | None:
        """Why ``value`` is not acceptable, or None."""
        if len(value) > self.max_length:
            return f"is {len(value)} characters long; at most {self.max_length}"
        if value == "" and self.allow_empty:
            return None
        if self.allowed is not None and value not in self.allowed:
            return f"must be one of {', '.join(map(repr, self.allowed))}"
        if self.integer is not None and (problem := self.integer.problem_with(value)):
            return problem
        if (self.url or self.path) and (problem := location_problem(self.url, self.path, value)):
            return problem
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"must match {self.pattern}"
        return None


#: The most repairs a job's policy may allow, automatic and by a person.
MAX_AUTOMATIC_REPAIRS = 10
MAX_MANUAL_REPAIRS = 20
#: A pipeline's attempts at the most: its original run and every repair.
MAX_ATTEMPTS = 1 + MAX_AUTOMATIC_REPAIRS + MAX_MANUAL_REPAIRS

#: Databricks' termination types (``status.termination_details.type``); a
#: CLIENT_ERROR (a bug in the notebook, a bad parameter) is never transient.
TERMINATION_TYPES = ("SUCCESS", "INTERNAL_ERROR", "CLIENT_ERROR", "CLOUD_FAILURE")


class RepairPolicy(_Entry):
    """What becomes of a failed run: repaired automatically, waited on for a person, or left failed.

    A repair reruns only the run's failed tasks (and the tasks depending on
    them) in the same Databricks run (``jobs/runs/repair``).
    """

    #: Automatic repairs of a transient failure, at most this many per pipeline.
    automatic_attempts: int = Field(default=0, ge=0, le=MAX_AUTOMATIC_REPAIRS)
    #: Before the first automatic repair; doubled for each one after, up to the maximum.
    backoff_seconds: int = Field(default=30, ge=0, le=24 * 3600)
    max_backoff_seconds: int = Field(default=600, ge=0, le=24 * 3600)
    #: A failure is transient when its termination type, or its code, is listed.
    transient_termination_types: tuple[Literal["INTERNAL_ERROR", "CLOUD_FAILURE"], ...] = (
        "INTERNAL_ERROR",
        "CLOUD_FAILURE",
    )
    transient_termination_codes: tuple[str, ...] = ("DRIVER_ERROR", "CLUSTER_ERROR", "CLOUD_FAILURE")
    #: How long a failed pipeline waits for a person to repair or abandon it
    #: (POST /pipelines/{id}/repair, /abandon); 0: it fails at once.
    manual_window_seconds: int = Field(default=0, ge=0, le=MAX_TIMEOUT_SECONDS)
    #: Repairs a person may ask for, per pipeline.
    manual_attempts: int = Field(default=5, ge=0, le=MAX_MANUAL_REPAIRS)

    def is_transient(self, termination_type: str | None, termination_code: str | None) -> bool:
        """Whether a failure so terminated is worth an automatic repair. A client error never is."""
        if termination_type == "CLIENT_ERROR":
            return False
        return termination_type in self.transient_termination_types or (
            termination_code is not None and termination_code in self.transient_termination_codes
        )

    def backoff(self, repairs_before: int) -> int:
        """Seconds to wait before automatic repair number ``repairs_before + 1``."""
        return min(self.backoff_seconds * 2**repairs_before, self.max_backoff_seconds)


class _Startable(_Entry):
    """What a client may start: its parameters, who may start it, and how long it may wait."""

    #: The entry's own name (the table's key), filled in when the catalogue loads.
    name: JobName
    title: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    description: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    default_timeout_seconds: int = Field(default=6 * 3600, ge=1, le=MAX_TIMEOUT_SECONDS)
    max_timeout_seconds: int = Field(default=MAX_TIMEOUT_SECONDS, ge=1, le=MAX_TIMEOUT_SECONDS)
    #: A pipeline still waiting after this long counts as overdue.
    expected_duration_seconds: int | None = Field(default=None, ge=1)
    #: A caller holding any one of these may start it.
    start_scopes: tuple[StartScope, ...] = Field(default=("start",), min_length=1)
    parameters: dict[ParameterName, Parameter] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _timeouts(self) -> Self:
        if self.default_timeout_seconds > self.max_timeout_seconds:
            raise ValueError(
                f"default_timeout_seconds ({self.default_timeout_seconds}) exceeds "
                f"max_timeout_seconds ({self.max_timeout_seconds})"
            )
        reserved = sorted(set(PIPELINE_PARAMETERS) & set(self.parameters))
        if reserved:
            raise ValueError(f"parameter names reserved for the pipeline itself: {', '.join(reserved)}")
        return self

    def resolve(self, given: dict[str, str]) -> dict[str, str]:
        """``given`` with defaults filled in; :class:`InvalidParameters` naming every problem."""
        problems = [
            ParameterProblem(name, "is not a parameter of this job", sorted(self.parameters))
            for name in sorted(set(given) - set(self.parameters))
        ]
        resolved: dict[str, str] = {}
        for name, parameter in self.parameters.items():
            if name not in given:
                if parameter.required:
                    problems.append(ParameterProblem(name, "is required"))
                else:
                    assert parameter.default is not None  # validated
                    resolved[name] = parameter.default
                continue
            problem = parameter.problem_with(given[name])
            if problem is not None:
                problems.append(ParameterProblem(name, problem))
            resolved[name] = given[name]
        if problems:
            raise InvalidParameters(self.name, problems)
        return resolved

    def refusal(self, parameters: dict[str, str]) -> InvalidParameters | None:
        """Why ``parameters`` (resolved, as a spec holds them) may not be given to it, or None.

        The worker's check before Databricks is given a value: the gateway
        resolved them, but the catalogue may have tightened since, a
        pipeline's code may have made them, or the request may not have come
        through the gateway.
        """
        try:
            self.resolve(parameters)
        except InvalidParameters as exc:
            return exc
        return None

    def timeout(self, requested: int | None) -> int:
        """The pipeline's timeout for ``requested`` (None: the default)."""
        if requested is None:
            return self.default_timeout_seconds
        if requested > self.max_timeout_seconds:
            raise InvalidParameters(
                self.name,
                [
                    ParameterProblem(
                        "timeout_seconds", f"is {requested}; this job allows at most {self.max_timeout_seconds}"
                    )
                ],
                field="timeout_seconds",
            )
        return requested


class Job(_Startable):
    """One Databricks job: how it is found, how a run reports its end, and how a failed run is repaired.

    A job is a pipeline of its own (one job step), of the same name, unless
    ``standalone`` is false: then only the pipelines that list it run it.
    """

    #: The Databricks job, by name (resolved once through jobs/list) or by id.
    databricks_job_name: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    databricks_job_id: int | None = Field(default=None, gt=0)
    completion: Completion
    #: Of a multi-task run, the task whose exit value is the pipeline's result.
    result_task: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    repair: RepairPolicy = Field(default_factory=RepairPolicy)
    #: Whether a client may start it alone, as the one-job pipeline of its name.
    standalone: bool = True

    @model_validator(mode="after")
    def _one_databricks_job(self) -> Self:
        if (self.databricks_job_name is None) == (self.databricks_job_id is None):
            raise ValueError("name the Databricks job by databricks_job_name or databricks_job_id (exactly one)")
        return self

    @property
    def databricks_job(self) -> str:
        """The Databricks job as a person would name it."""
        return f"job {self.databricks_job_id}" if self.databricks_job_id else f"job {self.databricks_job_name!r}"


#: A scheduled pipeline's id is its name, ``-`` and the firing's time (``-20260101T0000``):
#: its name leaves room for them in a pipeline id (at most 64 characters).
SCHEDULED_ID_SUFFIX_LENGTH = len("-20260101T0000")
MAX_SCHEDULED_NAME_LENGTH = 64 - SCHEDULED_ID_SUFFIX_LENGTH

#: The shipped pipeline function a standalone job runs as (pipeline_worker.shipped).
ONE_JOB_FUNCTION = "one-job"


class Schedule(_Entry):
    """When a pipeline starts by itself, and with what (see pipeline_shared.schedules)."""

    #: Five fields (minute hour day-of-month month day-of-week), in UTC, as resonate-pg reads them.
    cron: Annotated[str, StringConstraints(min_length=9, max_length=100)]
    #: Who is emailed each firing's outcome.
    email: RecipientAddress
    #: Resolved against the pipeline's parameters when the catalogue loads.
    parameters: dict[ParameterName, str] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str) -> str:
        parse_cron(cron)
        return cron


class PipelineEntry(_Startable):
    """A pipeline: a function of the worker's (ours or a team's) that runs the listed jobs as steps."""

    #: The registered name of its function (``@pipeline("...")``); the entry's name by default.
    function: JobName | None = None
    #: The function's version new pipelines start on; one started earlier finishes on its own.
    version: int = Field(default=1, ge=1, le=10_000)
    #: The catalogue jobs it may run; any other is refused at its step.
    jobs: tuple[JobName, ...] = Field(min_length=1, max_length=100)
    #: Starts it by itself, besides the clients' starts.
    schedule: Schedule | None = None

    @model_validator(mode="after")
    def _schedule(self) -> Self:
        if self.schedule is None:
            return self
        if len(self.name) > MAX_SCHEDULED_NAME_LENGTH:
            raise ValueError(
                f"a scheduled pipeline's name is at most {MAX_SCHEDULED_NAME_LENGTH} characters "
                "(its pipelines' ids add the firing's time)"
            )
        try:
            self.resolve(dict(self.schedule.parameters))
        except InvalidParameters as exc:
            problems = "; ".join(problem.describe() for problem in exc.problems)
            raise ValueError(f"schedule parameters: {problems}") from None
        return self

    @property
    def function_name(self) -> str:
        return self.function or self.name

    def may_run(self, job: str) -> bool:
        return job in self.jobs


@dataclass(frozen=True)
class ParameterProblem:
    """What is wrong with one parameter of a request."""

    name: str
    problem: str
    #: For an undeclared parameter: the ones the job declares.
    declared: list[str] | None = None

    def describe(self) -> str:
        return f"{self.name} {self.problem}"


class InvalidParameters(ValueError):
    """A request's parameters do not fit its job."""

    def __init__(self, job: str, problems: list[ParameterProblem], field: str = "parameters") -> None:
        self.job = job
        self.problems = problems
        self.field = field
        super().__init__(f"job {job!r}: " + "; ".join(problem.describe() for problem in problems))


class UnknownJob(LookupError):
    """A request names a job the catalogue does not hold."""

    def __init__(self, job: str, known: list[str]) -> None:
        self.job = job
        self.known = known
        super().__init__(f"no job {job!r} in the catalogue; known: {', '.join(known) or 'none'}")


class CatalogueError(ValueError):
    """The catalogue file does not load: unreadable, not TOML, or invalid."""


class Catalogue(BaseModel):
    """Every job clients may start, by name, and the one a request that names none gets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: What a request that names nothing starts: a pipeline, or a standalone job.
    default: JobName
    jobs: dict[JobName, Job] = Field(min_length=1)
    pipelines: dict[JobName, PipelineEntry] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _name_each_entry(cls, data: object) -> object:
        for table in ("jobs", "pipelines"):
            if isinstance(data, dict) and isinstance(data.get(table), dict):
                entries = {
                    name: {"name": name, **entry} if isinstance(entry, dict) else entry
                    for name, entry in data[table].items()
                }
                data = {**data, table: entries}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for pipeline in self.pipelines.values():
            if pipeline.name in self.jobs and self.jobs[pipeline.name].standalone:
                raise ValueError(
                    f"pipeline {pipeline.name!r} has the name of a standalone job; "
                    "rename one, or set standalone = false on the job"
                )
            unknown = [job for job in pipeline.jobs if job not in self.jobs]
            if unknown:
                raise ValueError(f"pipeline {pipeline.name!r} lists jobs the catalogue lacks: {', '.join(unknown)}")
        if self.default not in self.startable:
            raise ValueError(f"default {self.default!r} is not one of the pipelines: {', '.join(self.startable)}")
        return self

    @cached_property
    def startable(self) -> dict[str, PipelineEntry]:
        """Every pipeline a client may start, by name: those listed, and each standalone job's own."""
        implicit = {
            name: PipelineEntry(
                name=name,
                title=job.title,
                description=job.description,
                function=ONE_JOB_FUNCTION,
                jobs=(name,),
                parameters=job.parameters,
                start_scopes=job.start_scopes,
                default_timeout_seconds=job.default_timeout_seconds,
                max_timeout_seconds=job.max_timeout_seconds,
                expected_duration_seconds=job.expected_duration_seconds,
            )
            for name, job in self.jobs.items()
            if job.standalone
        }
        return implicit | dict(self.pipelines)

    def pipeline(self, name: str | None) -> PipelineEntry:
        """The pipeline called ``name`` (None: the default); UnknownJob if there is none."""
        entry = self.startable.get(self.default if name is None else name)
        if entry is None:
            raise UnknownJob(str(name), sorted(self.startable))
        return entry

    @classmethod
    def load(cls, path: Path) -> Catalogue:
        """The catalogue in ``path``; CatalogueError naming the file and every problem."""
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CatalogueError(f"job catalogue {path}: cannot be read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CatalogueError(f"job catalogue {path}: not TOML: {exc}") from None
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            problems = [
                f"  {'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
                for error in exc.errors()
            ]
            raise CatalogueError(f"job catalogue {path}: invalid\n" + "\n".join(problems)) from None

    def job(self, name: str | None) -> Job:
        """The Databricks job called ``name`` (None: the default's); UnknownJob if there is none."""
        entry = self.jobs.get(self.default if name is None else name)
        if entry is None:
            raise UnknownJob(str(name), sorted(self.jobs))
        return entry
