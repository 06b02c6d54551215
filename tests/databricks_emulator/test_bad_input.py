"""Bad requests get the real API's error shape naming what was wrong, and do no harm."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from databricks_emulator.surface import ENDPOINTS


@pytest.fixture
def auth(emulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {emulator.token}"}


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"{not json", "MALFORMED_REQUEST", "Invalid JSON"),
        (b"[1, 2]", "MALFORMED_REQUEST", "expected a map"),
        (b"{}", "INVALID_PARAMETER_VALUE", "job_id"),
        (b'{"job_id": "abc"}', "INVALID_PARAMETER_VALUE", "job_id"),
        (b'{"job_id": JOB, "job_parameters": ["x"]}', "MALFORMED_REQUEST", "job_parameters"),
        (
            b'{"job_id": JOB, "job_parameters": {"pipeline_id": 7}}',
            "INVALID_PARAMETER_VALUE",
            "pipeline_id",
        ),
        (
            b'{"job_id": JOB, "idempotency_token": "' + b"x" * 65 + b'"}',
            "INVALID_PARAMETER_VALUE",
            "64",
        ),
    ],
)
def test_run_now_refuses_bad_bodies(control, emulator, auth, body, code, words):
    body = body.replace(b"JOB", str(emulator.job_id).encode())
    response = control.post("/api/2.2/jobs/run-now", content=body, headers=auth)
    assert response.status_code == 400
    assert response.json()["error_code"] == code and words in response.json()["message"]


@pytest.mark.parametrize("query", ["", "?run_id=abc", "?run_id="])
def test_runs_get_needs_an_integer_run_id(control, auth, query):
    response = control.get(f"/api/2.2/jobs/runs/get{query}", headers=auth)
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "run_id" in response.json()["message"]


def test_unknown_endpoint_and_method(control, auth):
    for method, path in [("GET", "/api/2.2/jobs/nope"), ("DELETE", "/api/2.2/jobs/run-now")]:
        response = control.request(method, path, headers=auth)
        assert response.status_code == 404
        assert response.json()["error_code"] == "ENDPOINT_NOT_FOUND"


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        ({"notebook": "explode"}, "notebook"),
        ({"start_delay_seconds": -1}, "start_delay_seconds"),
        ({"run_now_error_status": 500}, "run_now_error_status"),
        ({"typo": 1}, "typo"),
        ({"life_cycle": "EXPLODED"}, "'INTERNAL_ERROR' or 'SKIPPED'"),
        ({"tasks": {"pipeline": {"code": "OOPS"}}}, "'CLOUD_FAILURE'"),
        ({"tasks": {"pipeline": {"code": "SUCCESS"}}}, "'DRIVER_ERROR'"),
        ({"tasks": {"pipeline": {"code": "CLOUD_FAILURE", "type": "SUCCESS"}}}, "'CLIENT_ERROR'"),
        ({"tasks": {"pipeline": {"type": "CLIENT_ERROR"}}}, "give code too"),
        ({"tasks": {"pipeline": {"fail_attempts": -1}}}, "fail_attempts"),
        ({"tasks": {"no_such_task": {"fail": True}}}, "no job here has a task 'no_such_task'"),
    ],
)
def test_control_api_refuses_bad_plans_naming_what_is_allowed(control, pipeline_id, plan, words):
    response = control.put(f"/emulator/faults/pipelines/{pipeline_id}", json=plan)
    assert response.status_code == 422
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert words in response.json()["message"]
    assert control.get("/healthz").status_code == 200


#: Any JSON value, nested a little.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
#: What a client may put in a query string: the endpoints' own parameter names and others.
QUERY_KEYS = st.sampled_from(sorted({name for e in ENDPOINTS for name in e.params} | {"x", ""}))


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    version=st.sampled_from(["2.2", "2.1", "2.0", "2.3"]),
    body=st.one_of(st.dictionaries(QUERY_KEYS | st.text(max_size=10), JSON, max_size=5), JSON, st.binary(max_size=30)),
    query=st.lists(st.tuples(QUERY_KEYS, st.text(max_size=12)), max_size=4),
)
def test_no_request_crashes_an_endpoint(control, emulator, auth, endpoint, version, body, query):
    if _names_a_job(body, query, set(emulator.jobs.values())):
        return  # a valid run-now would start a real run: not what this test is about
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = control.request(
        endpoint.method, f"/api/{version}/{endpoint.path}", params=query, content=content, headers=auth
    )
    assert answer.status_code in (200, 400, 404, 501), answer.text
    assert answer.status_code == 200 or set(answer.json()) == {"error_code", "message"}


def _names_a_job(body: object, query: list[tuple[str, str]], job_ids: set[int]) -> bool:
    given = [value for key, value in query if key == "job_id"]
    if isinstance(body, dict):
        given.append(body.get("job_id"))
    return any(str(value).strip() in {str(job_id) for job_id in job_ids} for value in given)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    form=st.binary(max_size=60) | st.text(max_size=60).map(str.encode),
    # What HTTP allows in a header value (anything else never reaches the app: the server refuses it).
    authorization=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30).map(
        "Basic {}".format
    ),
)
def test_no_token_request_crashes_the_token_endpoint(control, form, authorization):
    answer = control.post(
        "/oidc/v1/token",
        content=form,
        headers={"Authorization": authorization, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code in (400, 401), answer.text
    assert set(answer.json()) == {"error", "error_description"}


@pytest.mark.parametrize("run_id", ["٤٢", str(2**63), "1.0", "+1", " "])
def test_ids_are_ascii_int64s(control, auth, run_id):
    response = control.get("/api/2.2/jobs/runs/get", params={"run_id": run_id}, headers=auth)
    assert response.status_code == 400 and "is not an integer" in response.json()["message"]
