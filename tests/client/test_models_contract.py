"""The client's models held to the gateway's OpenAPI document, so the two cannot drift apart.

The client does not import the gateway (it installs without it); this test
does. For each route the client reads, the response schema is found through
the route, not by name, and compared with the client's model field by field:

- every field of the client's model exists in the gateway's schema, and every
  type the gateway may send there is one the client accepts (nested models
  compared the same way, enums by their values);
- every field the gateway always sends (``required``) exists in the client's
  model, and the client requires nothing the gateway may leave out.

What the client sends (the start body, the list's query) is checked against
the request schema and the route's parameters the same way.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from pipeline_api.app import create_app
from pipeline_client import _wire
from pipeline_client.models import ErrorBody, JobList, PipelinePage, PipelineStatus, PipelineTimeline, Step
from pipeline_shared.models import StepSummary
from tests.support.gateway_app import SETTINGS

Schema = dict[str, Any]

#: What the client reads from each route, by the answer it reads.
READS = [
    ("post", "/pipelines", "202", PipelineStatus),
    ("post", "/pipelines", "200", PipelineStatus),
    ("get", "/pipelines", "200", PipelinePage),
    ("get", "/pipelines/{pipeline_id}", "200", PipelineStatus),
    ("get", "/pipelines/{pipeline_id}", "404", ErrorBody),
    ("post", "/pipelines/{pipeline_id}/cancel", "202", PipelineStatus),
    ("post", "/pipelines/{pipeline_id}/repair", "202", PipelineStatus),
    ("post", "/pipelines/{pipeline_id}/abandon", "202", PipelineStatus),
    ("post", "/pipelines/{pipeline_id}/approve", "202", PipelineStatus),
    ("post", "/pipelines/{pipeline_id}/reject", "202", PipelineStatus),
    ("get", "/pipelines/{pipeline_id}/events", "200", PipelineTimeline),
    ("get", "/jobs", "200", JobList),
]


@pytest.fixture(scope="module")
def openapi() -> Schema:
    return create_app(SETTINGS).openapi()


class Comparison:
    """Walks a client schema beside a gateway schema and writes down every way they disagree."""

    def __init__(self, client_defs: Schema, gateway_defs: Schema) -> None:
        self.client_defs, self.gateway_defs = client_defs, gateway_defs
        self.problems: list[str] = []

    @staticmethod
    def _resolve(schema: Schema, defs: Schema) -> Schema:
        while "$ref" in schema:
            schema = defs[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def _variants(self, schema: Schema, defs: Schema) -> list[Schema]:
        schema = self._resolve(schema, defs)
        if "anyOf" in schema or "oneOf" in schema:
            return [v for part in schema.get("anyOf", schema.get("oneOf")) for v in self._variants(part, defs)]
        return [schema]

    def _accepts(self, client: Schema, gateway: Schema, where: str) -> bool:
        if not client.get("type") and "enum" not in client:
            return True  # Any
        client_type, gateway_type = client.get("type", "string"), gateway.get("type", "string")
        if client_type != gateway_type and not (client_type == "number" and gateway_type == "integer"):
            return False
        if "enum" in client and not set(gateway.get("enum", [object()])) <= set(client["enum"]):
            return False
        if client_type == "array":
            return self.compatible(client.get("items", {}), gateway.get("items", {}), f"{where}[]")
        if client_type == "object" and "properties" in client and "properties" in gateway:
            self.model(client, gateway, where)
        elif client_type == "object" and isinstance(client.get("additionalProperties"), dict):
            values = gateway.get("additionalProperties")
            return isinstance(values, dict) and self.compatible(client["additionalProperties"], values, f"{where}.*")
        return True

    def compatible(self, client: Schema, gateway: Schema, where: str) -> bool:
        client_variants = self._variants(client, self.client_defs)
        for sent in self._variants(gateway, self.gateway_defs):
            if not any(self._accepts(taken, sent, where) for taken in client_variants):
                self.problems.append(f"{where}: the gateway may send {sent}, which the client's {client} refuses")
                return False
        return True

    def model(self, client: Schema, gateway: Schema, where: str) -> None:
        client, gateway = self._resolve(client, self.client_defs), self._resolve(gateway, self.gateway_defs)
        theirs, ours = gateway.get("properties", {}), client.get("properties", {})
        for name, field in ours.items():
            if name not in theirs:
                self.problems.append(f"{where}.{name}: the client has it, the gateway's schema does not")
            else:
                self.compatible(field, theirs[name], f"{where}.{name}")
        for name in gateway.get("required", []):
            if name not in ours:
                self.problems.append(f"{where}.{name}: the gateway always sends it, the client's model lacks it")
        for name in set(client.get("required", [])) - set(gateway.get("required", [])):
            self.problems.append(f"{where}.{name}: the client requires it, the gateway may leave it out")


def response_schema(openapi: Schema, method: str, path: str, status: str) -> Schema:
    return openapi["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


@pytest.mark.parametrize(("method", "path", "status", "model"), READS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_the_clients_model_reads_what_the_route_sends(
    openapi: Schema, method: str, path: str, status: str, model: type[BaseModel]
) -> None:
    ours = model.model_json_schema(ref_template="#/$defs/{model}")
    comparison = Comparison(ours.get("$defs", {}), openapi["components"]["schemas"])
    comparison.model(ours, response_schema(openapi, method, path, status), f"{method.upper()} {path} {status}")

    assert comparison.problems == []


def test_the_clients_step_reads_the_shared_step_summary() -> None:
    """The status document's steps are the shared StepSummary, field for field (contract of issue 22)."""
    ours = Step.model_json_schema(ref_template="#/$defs/{model}")
    theirs = StepSummary.model_json_schema(ref_template="#/$defs/{model}")
    comparison = Comparison(ours.get("$defs", {}), theirs.get("$defs", {}))
    comparison.model(ours, theirs, "StepSummary")

    assert comparison.problems == []


def test_the_comparison_sees_a_missing_field_a_new_required_one_and_a_wrong_type() -> None:
    """The test above would pass on anything if the comparison saw nothing: here it must see three things."""
    gateway = {"type": "object", "properties": {"id": {"type": "string"}, "n": {"type": "integer"}}, "required": ["id"]}
    client = {"type": "object", "properties": {"n": {"type": "string"}, "extra": {"type": "string"}}}
    comparison = Comparison({}, {})
    comparison.model(client, gateway, "X")

    assert len(comparison.problems) == 3, comparison.problems


def test_what_the_client_sends_is_what_the_gateway_takes(openapi: Schema) -> None:
    schemas = openapi["components"]["schemas"]
    start = _wire.start_body("csv-statistics", "c@x.io", {"source": "s"}, "an-id", 60)
    listing = _wire.list_params(["failed"], "csv-statistics", "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", 50, "c")
    list_route = openapi["paths"]["/pipelines"]["get"]
    repair_body = openapi["paths"]["/pipelines/{pipeline_id}/repair"]["post"]["requestBody"]["content"]

    assert set(start) <= set(schemas["PipelineRequest"]["properties"])
    assert set(schemas["PipelineRequest"]["required"]) <= set(start)
    assert set(listing) <= {parameter["name"] for parameter in list_route["parameters"]}
    assert repair_body["application/json"]["schema"] == {"$ref": "#/components/schemas/RepairRequest"}
    # Issue 22: a repair may name the job step it repairs (the gateway's branch adds "step").
    assert set(schemas["RepairRequest"]["properties"]) == {"parameters", "step"}
    assert set(_wire.repair_body({}, "2")) == {"parameters", "step"}
