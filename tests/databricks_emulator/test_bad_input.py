"""Bad requests get the real API's error shape naming what was wrong, and do no harm."""

from __future__ import annotations

import pytest


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
    "plan",
    [
        {"notebook": "explode"},
        {"start_delay_seconds": -1},
        {"run_now_error_status": 500},
        {"typo": 1},
    ],
)
def test_control_api_refuses_bad_plans(control, pipeline_id, plan):
    response = control.put(f"/emulator/faults/pipelines/{pipeline_id}", json=plan)
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert control.get("/healthz").status_code == 200
