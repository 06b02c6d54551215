"""The emulator README's lists of what is and is not modelled, walked against the running emulator.

Each row of the *Endpoints* table must be served, under every version, with
exactly the parameters it lists; each row of *Knowingly not modelled* must
answer 501 naming what it names. Both lists must also be exactly what
``surface`` declares, so adding an endpoint or a refusal without the README
(or the other way round) fails here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest

from databricks_emulator.surface import (
    API_VERSIONS,
    BOOLEAN,
    ENDPOINTS,
    INT64,
    NOT_MODELLED_ENDPOINTS,
    STRING,
    STRING_MAP,
    STRUCTURE,
    Endpoint,
)
from tests.support.emulator_process import REPO_ROOT

README = (REPO_ROOT / "infra" / "databricks-emulator" / "README.md").read_text()
#: A value of each kind that the real API would accept, to probe a refused field with.
SAMPLES = {INT64: 1, BOOLEAN: True, STRING: "x", STRING_MAP: {"pipeline_id": "x"}, STRUCTURE: {"enabled": True}}
BY_NAME = {(endpoint.method, endpoint.path): endpoint for endpoint in ENDPOINTS}


def table_rows(heading: str) -> list[list[str]]:
    """The body rows of the first table under ``### heading``, as lists of cells."""
    section = README.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


@dataclass(frozen=True)
class Refusal:
    method: str
    path: str
    field: str | None
    versions: tuple[str, ...]


def refusals_listed() -> list[Refusal]:
    found = []
    for first, _why in table_rows("Knowingly not modelled"):
        names = ticked(first)
        method, path = names[0].split(" ")
        versions = re.search(r"\(([\d., ]+)\)", first)
        listed = tuple(v.strip() for v in versions.group(1).split(",")) if versions else API_VERSIONS
        found.append(Refusal(method, path, names[1] if len(names) > 1 else None, listed))
    return found


def refusals_declared() -> set[Refusal]:
    declared = {Refusal(e.method, e.path, None, API_VERSIONS) for e in NOT_MODELLED_ENDPOINTS}
    for endpoint in ENDPOINTS:
        for name, param in endpoint.params.items():
            if param.not_modelled:
                declared.add(Refusal(endpoint.method, endpoint.path, name, tuple(param.not_modelled)))
    return declared


def required(endpoint: Endpoint) -> dict:
    """Its required ids, naming no job or run that exists: probing must not start runs."""
    return {name: 1 for name, param in endpoint.params.items() if param.required}


def call(client: httpx.Client, method: str, path: str, body: dict) -> httpx.Response:
    return client.request(method, path, json=body)


def test_the_endpoints_table_lists_what_is_served_with_its_parameters():
    rows = table_rows("Endpoints")
    listed = [tuple(ticked(row[0])[0].split(" ")) for row in rows]
    assert listed == [(e.method, e.path) for e in ENDPOINTS]
    for row, endpoint in zip(rows, ENDPOINTS, strict=True):
        modelled = [
            name
            for name, param in endpoint.params.items()
            if len(param.not_modelled) < len(param.versions)  # served in at least one version
        ]
        assert ticked(row[1]) == modelled, endpoint.path
        assert [name for name in modelled if endpoint.params[name].required] == [
            name for name in ticked(row[1]) if f"`{name}` (required)" in row[1]
        ]


@pytest.mark.parametrize("version", API_VERSIONS)
def test_every_endpoint_listed_is_served(api, version):
    for method, path in (tuple(ticked(row[0])[0].split(" ")) for row in table_rows("Endpoints")):
        answer = call(api, method, f"/api/{version}/{path}", required(BY_NAME[(method, path)]))
        # Served: a real answer, or the real refusal of an id that does not exist; never 404 or 501.
        assert answer.status_code in (200, 400), (version, path, answer.text)
        if answer.status_code == 400:
            assert re.fullmatch(r"(Run|Job) 1 does not exist\.", answer.json()["message"]), answer.text


def test_the_not_modelled_table_is_what_the_emulator_refuses():
    assert set(refusals_listed()) == refusals_declared()


@pytest.mark.parametrize("refusal", refusals_listed(), ids=lambda r: f"{r.method} {r.path} {r.field or ''}")
def test_every_refusal_listed_answers_501_naming_it(api, refusal):
    for version in refusal.versions:
        path = f"/api/{version}/{refusal.path}"
        if refusal.field is None:
            body = {}
        else:
            endpoint = BY_NAME[(refusal.method, refusal.path)]
            body = {**required(endpoint), refusal.field: SAMPLES[endpoint.params[refusal.field].kind]}
        answer = call(api, refusal.method, path, body)
        assert answer.status_code == 501, (version, answer.text)
        assert answer.json()["error_code"] == "NOT_IMPLEMENTED"
        named = (refusal.field and f"{refusal.field} in {refusal.method} {path}") or f"{refusal.method} {path}"
        assert named in answer.json()["message"]
