"""What of the Jobs API the emulator serves: its endpoints, their parameters, by API version.

This is the one list the routes read their parameters from (see
``params``), the package README repeats in prose, and a test walks against
the running emulator, so the three cannot drift apart.

A parameter falls into one of three cases, and each is answered as a client
following Databricks' reference should see it:

- modelled: read from the query string or the JSON body and acted on;
- defined by the real API but not modelled here: refused with 501
  ``NOT_IMPLEMENTED`` naming it, never silently defaulted;
- not defined by that API version at all: ignored, as the real API ignores
  fields it does not know (it even accepts an unrecognised enum value with
  200 and drops it; apache/airflow#72148 measured that on a live workspace).

Endpoints of the Jobs API the emulator does not serve answer 501 naming them;
paths the real API does not have answer its 404 ``ENDPOINT_NOT_FOUND``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from databricks_emulator.errors import invalid_parameter, malformed_request
from databricks_emulator.jobspec import read_boolean

#: The Jobs API versions served. They share one model; what differs is paging (2.2
#: pages one job's or run's long arrays) and 2.0's handling of job parameters.
API_VERSIONS: Final = ("2.2", "2.1", "2.0")


# -- kinds of parameter: how each is read from a query string or a JSON body ----------


#: The range of an int64, which is what every id and count of the Jobs API is.
_INT64_RANGE = range(-(2**63), 2**63)


def _int64(name: str, value: object) -> int:
    """An int64, given as a JSON number or a string of ASCII digits (protobuf JSON allows both)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().removeprefix("-").isdigit() and value.isascii():
        number = int(value)
    if number is None or number not in _INT64_RANGE:
        raise invalid_parameter(f"Invalid value for {name}: {value!r} is not an integer.")
    return number


def _boolean(name: str, value: object) -> bool:
    found = read_boolean(value)
    if found is None:
        raise invalid_parameter(f"Invalid value for {name}: {value!r} is not a boolean (true or false).")
    return found


def _string(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    raise invalid_parameter(f"{name} must be a string")


def _string_map(name: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise malformed_request(f"{name} must be a map from parameter name to string value")
    bad = sorted(key for key, item in value.items() if not isinstance(item, str))
    if bad:
        raise invalid_parameter(f"{name} values must be strings; not: {', '.join(bad)}")
    return value


def _string_list(name: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid_parameter(f"{name} must be a list of strings")
    return value


def _any(name: str, value: object) -> object:
    return value


@dataclass(frozen=True)
class Kind:
    """How one kind of parameter is read; ``in_query`` is False where a query string cannot carry it."""

    name: str
    parse: Callable[[str, object], object]
    in_query: bool = True


INT64: Final = Kind("int64", _int64)
BOOLEAN: Final = Kind("boolean", _boolean)
STRING: Final = Kind("string", _string)
STRING_MAP: Final = Kind("map of strings", _string_map, in_query=False)
STRING_LIST: Final = Kind("list of strings", _string_list, in_query=False)
#: A structured field whose only modelled property is whether it was given.
STRUCTURE: Final = Kind("structure", _any, in_query=False)


@dataclass(frozen=True)
class Param:
    kind: Kind
    required: bool = False
    #: The versions whose reference defines the field; in others it is unknown, so ignored.
    versions: tuple[str, ...] = API_VERSIONS
    #: Versions in which the emulator refuses the field with 501, and why.
    not_modelled: Mapping[str, str] = field(default_factory=dict)


def refused(why: str, versions: tuple[str, ...] = API_VERSIONS) -> Param:
    """A string-valued field the real API defines and the emulator refuses (501), for ``why``."""
    return Param(STRING, versions=versions, not_modelled=dict.fromkeys(versions, why))


def refused_structure(why: str) -> Param:
    return Param(STRUCTURE, not_modelled=dict.fromkeys(API_VERSIONS, why))


@dataclass(frozen=True)
class Endpoint:
    method: str
    #: The path after ``/api/<version>/``.
    path: str
    params: Mapping[str, Param] = field(default_factory=dict)

    def name(self, version: str) -> str:
        return f"{self.method} /api/{version}/{self.path}"


@dataclass(frozen=True)
class NotModelledEndpoint:
    method: str
    path: str
    why: str


#: Task-parameter fields of run-now; a job that defines job parameters refuses them
#: (400 INVALID_PARAMETER_VALUE), as the real API does.
LEGACY_TASK_PARAMETERS: Final = (
    "notebook_params",
    "python_params",
    "jar_params",
    "spark_submit_params",
    "python_named_params",
    "sql_params",
    "dbt_commands",
    "pipeline_params",
)

#: run-now's and repair's job parameters: a map of strings, which 2.0 is not known to take.
JOB_PARAMETERS: Final = Param(
    STRING_MAP,
    not_modelled={
        "2.0": "what Jobs API 2.0 does with job_parameters is not documented; "
        "2.1 and 2.2 take them (call /api/2.1 or /api/2.2)"
    },
)

RUN_NOW: Final = Endpoint(
    "POST",
    "jobs/run-now",
    {
        "job_id": Param(INT64, required=True),
        "job_parameters": JOB_PARAMETERS,
        "idempotency_token": Param(STRING),
        **{name: Param(STRUCTURE) for name in LEGACY_TASK_PARAMETERS},
        "queue": refused_structure("a run queues as its job's queue setting in the bundle says"),
        "performance_target": refused("there is no serverless compute to tune"),
        "duration_target": refused("there is no serverless compute to tune"),
        "only": refused_structure("a run runs every task of its job"),
    },
)
RUNS_GET: Final = Endpoint(
    "GET",
    "jobs/runs/get",
    {
        "run_id": Param(INT64, required=True),
        "include_history": Param(BOOLEAN),
        # No parameter holds a reference, so there is nothing resolved to include.
        "include_resolved_values": Param(BOOLEAN),
        "page_token": Param(STRING, versions=("2.2",)),
    },
)
RUNS_CANCEL: Final = Endpoint("POST", "jobs/runs/cancel", {"run_id": Param(INT64, required=True)})
RUNS_REPAIR: Final = Endpoint(
    "POST",
    "jobs/runs/repair",
    {
        "run_id": Param(INT64, required=True),
        "rerun_tasks": Param(STRING_LIST),
        "rerun_all_failed_tasks": Param(BOOLEAN),
        "rerun_dependent_tasks": Param(BOOLEAN),
        "latest_repair_id": Param(INT64),
        "job_parameters": JOB_PARAMETERS,
        **{name: Param(STRUCTURE) for name in LEGACY_TASK_PARAMETERS},
        "performance_target": refused("there is no serverless compute to tune"),
        "duration_target": refused("there is no serverless compute to tune"),
    },
)
RUNS_GET_OUTPUT: Final = Endpoint("GET", "jobs/runs/get-output", {"run_id": Param(INT64, required=True)})
JOBS_GET: Final = Endpoint(
    "GET",
    "jobs/get",
    {
        "job_id": Param(INT64, required=True),
        # No job has a trigger, so there is no trigger state to include.
        "include_trigger_state": Param(BOOLEAN),
        "page_token": Param(STRING, versions=("2.2",)),
    },
)
JOBS_LIST: Final = Endpoint(
    "GET",
    "jobs/list",
    {
        "name": Param(STRING),
        "expand_tasks": Param(BOOLEAN),
        "limit": Param(INT64),
        "offset": Param(INT64),
        "page_token": Param(STRING),
    },
)
RUNS_LIST: Final = Endpoint(
    "GET",
    "jobs/runs/list",
    {
        "active_only": Param(BOOLEAN),
        "completed_only": Param(BOOLEAN),
        "job_id": Param(INT64),
        "limit": Param(INT64),
        "offset": Param(INT64),
        "page_token": Param(STRING),
        "start_time_from": Param(INT64),
        "start_time_to": Param(INT64),
        "run_type": Param(STRING),
        "expand_tasks": Param(BOOLEAN),
    },
)
#: Every endpoint served, in the README's order.
ENDPOINTS: Final = (RUN_NOW, RUNS_GET, RUNS_CANCEL, RUNS_REPAIR, RUNS_GET_OUTPUT, JOBS_GET, JOBS_LIST, RUNS_LIST)

#: Jobs API endpoints a workspace serves and the emulator does not.
NOT_MODELLED_ENDPOINTS: Final = (
    NotModelledEndpoint("POST", "jobs/create", "the workspace holds the bundle's jobs only"),
    NotModelledEndpoint("POST", "jobs/reset", "the jobs' settings come from the bundle"),
    NotModelledEndpoint("POST", "jobs/update", "the jobs' settings come from the bundle"),
    NotModelledEndpoint("POST", "jobs/delete", "the bundle's jobs cannot be deleted"),
    NotModelledEndpoint("POST", "jobs/runs/submit", "only runs of the bundle's jobs exist"),
    NotModelledEndpoint("GET", "jobs/runs/export", "runs have no exportable views"),
    NotModelledEndpoint("POST", "jobs/runs/delete", "runs are never deleted"),
    NotModelledEndpoint("POST", "jobs/runs/cancel-all", "runs are cancelled one by one"),
)
