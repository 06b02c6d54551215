"""Reading a Jobs API call's parameters the way Databricks takes them.

Databricks' REST reference sends parameters both ways, for GET as well as
POST: its own first example is ``curl --request GET .../clusters/get --data
'{ "cluster_id": ... }'`` (a JSON body on a GET), its CLI sends
``databricks api get /api/2.0/jobs/get --json '{"job_id": 123}'``, the
older clients (databricks-cli before 2019, Airflow's first Databricks hook)
sent ``GET jobs/runs/get`` with a JSON body, and databricks-sdk sends a query
string. So every endpoint reads each parameter from both the query string and
a JSON body (whatever the Content-Type: ``curl --data`` labels JSON as a
form).

Databricks documents no precedence between the two. Rather than pick one a
workspace may not share, a parameter given in both places with different
values is refused, naming both values; the same value twice is fine.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from databricks_emulator.errors import invalid_parameter, malformed_request, missing_field, not_modelled
from databricks_emulator.surface import Endpoint


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, ``{}`` for an empty body."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise malformed_request(f"Invalid JSON given in the body of the request: {exc}") from None
    if not isinstance(body, dict):
        raise malformed_request("Invalid JSON given in the body of the request - expected a map")
    return body


async def read_call(request: Request, endpoint: Endpoint, version: str) -> dict[str, Any]:
    """The parameters ``endpoint`` models, parsed, from the query string and the JSON body.

    Raises the real API's errors for a missing required field and for a bad
    value, and 501 for a field the real API has and the emulator does not model.
    Fields this API version does not define are ignored, as the real API does.
    """
    body = await json_body(request)
    values: dict[str, Any] = {}
    for name, param in endpoint.params.items():
        if version not in param.versions:
            continue
        from_query = request.query_params.getlist(name)
        # protobuf JSON reads an explicit null as "not set".
        from_body = [body[name]] if body.get(name) is not None else []
        if not (from_query or from_body):
            if param.required:
                raise missing_field(name)
            continue
        why = param.not_modelled.get(version)
        if why is not None:
            raise not_modelled(f"{name} in {endpoint.name(version)}", why)
        if from_query and not param.kind.in_query:
            raise invalid_parameter(
                f"{name} ({param.kind.name}) cannot be given in the query string; send it in the JSON body."
            )
        parsed = [(where, param.kind.parse(name, raw)) for where, raw in _places(from_query, from_body)]
        distinct = {repr(value) for _, value in parsed}
        if len(distinct) > 1:
            given = ", ".join(f"{value!r} in the {where}" for where, value in parsed)
            raise invalid_parameter(
                f"{name} is given more than once with different values ({given}); "
                "the Jobs API documents no precedence between the query string and the JSON body."
            )
        values[name] = parsed[0][1]
    return values


def _places(from_query: list[str], from_body: list[object]) -> list[tuple[str, object]]:
    return [("query string", raw) for raw in from_query] + [("JSON body", raw) for raw in from_body]
