"""A second client, written from Databricks' Jobs API reference rather than from our SDK.

Every call here is shaped as the reference's curl examples are: ``curl
--request GET "$HOST/api/2.2/jobs/runs/get?run_id=..."`` (a query string),
``curl --request GET ... --data '{"run_id": ...}'`` (a JSON body on a GET, as
the reference's own first example sends), ``curl --request POST ... --data
'{...}'``, and ``--header "Authorization: Bearer $TOKEN"``. curl labels a
``--data`` body ``application/x-www-form-urlencoded`` even when it is JSON, and
so does :func:`curl` here: the API reads JSON whatever the label says.

Nothing here imports databricks-sdk, so an answer that only the SDK's
leniency would accept cannot pass; the SDK-model check still reads every
answer in the fixture's emulator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

#: What ``curl --data`` sends as the Content-Type of its body.
CURL_DATA_TYPE = "application/x-www-form-urlencoded"


class Curl:
    """``curl`` against the emulator: method, path, query string, ``--data`` and the bearer header."""

    def __init__(self, client: httpx.Client, token: str) -> None:
        self.client = client
        self.token = token

    def __call__(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | str | None = None,
        data: Any = None,
        token: str | None = "default",
    ) -> httpx.Response:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        content = None
        if data is not None:
            content = data if isinstance(data, bytes) else json.dumps(data).encode()
            headers["Content-Type"] = CURL_DATA_TYPE
        return self.client.request(method, path, params=query, content=content, headers=headers)


@pytest.fixture
def curl(emulator) -> Iterator[Curl]:
    with httpx.Client(base_url=emulator.url, timeout=30) as client:
        yield Curl(client, emulator.token)


def start(curl: Curl, job_id: int, pipeline_id: str, version: str = "2.2", **extra: Any) -> int:
    answer = curl(
        "POST",
        f"/api/{version}/jobs/run-now",
        data={"job_id": job_id, "job_parameters": {"pipeline_id": pipeline_id}, **extra},
    )
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"run_id", "number_in_job"}
    return answer.json()["run_id"]


def wait_terminated(curl: Curl, run_id: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = curl("GET", "/api/2.2/jobs/runs/get", query={"run_id": run_id}).json()
        if run["state"]["life_cycle_state"] == "TERMINATED":
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['state']} after {timeout}s"
        time.sleep(0.05)


def error(answer: httpx.Response) -> tuple[int, str | int, str]:
    body = answer.json()
    assert set(body) == {"error_code", "message"}, body
    return answer.status_code, body["error_code"], body["message"]


# -- run-now ---------------------------------------------------------------------------


def test_run_now_with_job_parameters_and_an_idempotency_token(curl, emulator, pipeline_id):
    token = f"ref-{pipeline_id}"
    first = start(curl, emulator.job_id, pipeline_id, idempotency_token=token)
    # job_id as a string, as protobuf JSON allows for an int64, and the same token: the same run.
    again = curl(
        "POST",
        "/api/2.1/jobs/run-now",
        data={
            "job_id": str(emulator.job_id),
            "job_parameters": {"pipeline_id": pipeline_id},
            "idempotency_token": token,
        },
    )
    assert again.json() == {"run_id": first, "number_in_job": first}


@pytest.mark.parametrize(
    ("data", "status", "code", "words"),
    [
        ({}, 400, "INVALID_PARAMETER_VALUE", "Missing required field: job_id"),
        ({"job_id": 1}, 400, "INVALID_PARAMETER_VALUE", "Job 1 does not exist."),
        ({"job_id": "JOB", "notebook_params": {"pipeline_id": "x"}}, 400, "INVALID_PARAMETER_VALUE", "job_parameters"),
        ({"job_id": "JOB", "job_parameters": {"nope": "x"}}, 400, "INVALID_PARAMETER_VALUE", "nope"),
        ({"job_id": "JOB", "queue": {"enabled": True}}, 501, "NOT_IMPLEMENTED", "queue"),
        ({"job_id": "JOB", "only": ["pipeline"]}, 501, "NOT_IMPLEMENTED", "only"),
    ],
)
def test_run_now_errors(curl, emulator, data, status, code, words):
    data = {key: (emulator.job_id if value == "JOB" else value) for key, value in data.items()}
    got_status, got_code, message = error(curl("POST", "/api/2.2/jobs/run-now", data=data))
    assert (got_status, got_code) == (status, code) and words in message


def test_run_now_under_2_0_refuses_job_parameters_rather_than_guess(curl, emulator, pipeline_id):
    data = {"job_id": emulator.job_id, "job_parameters": {"pipeline_id": pipeline_id}}
    status, code, message = error(curl("POST", "/api/2.0/jobs/run-now", data=data))
    assert (status, code) == (501, "NOT_IMPLEMENTED")
    assert "job_parameters in POST /api/2.0/jobs/run-now" in message and "/api/2.1" in message


# -- runs/get ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.2", "2.1", "2.0"])
def test_runs_get_by_query_string_and_by_json_body_alike(curl, emulator, pipeline_id, version):
    run_id = start(curl, emulator.job_id, pipeline_id)
    by_query = curl("GET", f"/api/{version}/jobs/runs/get", query={"run_id": run_id})
    by_body = curl("GET", f"/api/{version}/jobs/runs/get", data={"run_id": run_id})
    by_string = curl("GET", f"/api/{version}/jobs/runs/get", data={"run_id": str(run_id)})
    # Both places at once, agreeing, are fine too.
    by_both = curl("GET", f"/api/{version}/jobs/runs/get", query={"run_id": run_id}, data={"run_id": run_id})

    for answer in (by_query, by_body, by_string, by_both):
        assert answer.status_code == 200, answer.text
        assert answer.json()["run_id"] == run_id and answer.json()["job_id"] == emulator.job_id
    assert {p["name"]: p["value"] for p in by_body.json()["job_parameters"]}["pipeline_id"] == pipeline_id


def test_runs_get_of_the_task_run_names_its_job_run(curl, emulator, pipeline_id):
    run_id = start(curl, emulator.job_id, pipeline_id)
    [task] = curl("GET", "/api/2.2/jobs/runs/get", query={"run_id": run_id}).json()["tasks"]
    assert task["task_key"] == "pipeline"

    task_run = curl("GET", "/api/2.2/jobs/runs/get", data={"run_id": task["run_id"]}).json()

    assert task_run["run_id"] == task["run_id"] and task_run["job_run_id"] == run_id


def test_unknown_fields_are_ignored_as_the_real_api_ignores_them(curl, emulator, pipeline_id):
    run_id = start(curl, emulator.job_id, pipeline_id)
    answer = curl("GET", "/api/2.2/jobs/runs/get", query={"run_id": run_id, "colour": "blue"}, data={"shape": 1})
    assert answer.status_code == 200
    # page_token is no field of 2.1's runs/get, so there it is unknown, hence ignored.
    assert curl("GET", "/api/2.1/jobs/runs/get", query={"run_id": run_id, "page_token": "x"}).status_code == 200


@pytest.mark.parametrize(
    ("query", "data", "status", "code", "words"),
    [
        (None, None, 400, "INVALID_PARAMETER_VALUE", "Missing required field: run_id"),
        (None, {}, 400, "INVALID_PARAMETER_VALUE", "Missing required field: run_id"),
        (None, {"run_id": None}, 400, "INVALID_PARAMETER_VALUE", "Missing required field: run_id"),
        ({"run_id": "abc"}, None, 400, "INVALID_PARAMETER_VALUE", "'abc' is not an integer"),
        (None, {"run_id": [1]}, 400, "INVALID_PARAMETER_VALUE", "is not an integer"),
        ({"run_id": 1}, {"run_id": 2}, 400, "INVALID_PARAMETER_VALUE", "1 in the query string, 2 in the JSON body"),
        ("run_id=1&run_id=2", None, 400, "INVALID_PARAMETER_VALUE", "different values"),
        (None, b"{not json", 400, "MALFORMED_REQUEST", "Invalid JSON"),
        (None, b"[1]", 400, "MALFORMED_REQUEST", "expected a map"),
        ({"run_id": 1}, None, 400, "INVALID_PARAMETER_VALUE", "Run 1 does not exist."),
        ({"run_id": 1, "include_history": "maybe"}, None, 400, "INVALID_PARAMETER_VALUE", "boolean"),
    ],
)
def test_runs_get_errors(curl, query, data, status, code, words):
    got_status, got_code, message = error(curl("GET", "/api/2.2/jobs/runs/get", query=query, data=data))
    assert (got_status, got_code) == (status, code) and words in message


# -- runs/get-output ------------------------------------------------------------------------


def test_runs_get_output_of_the_task_run(curl, emulator, pipeline_id):
    run_id = start(curl, emulator.job_id, pipeline_id)
    run = wait_terminated(curl, run_id)
    task_run_id = run["tasks"][0]["run_id"]

    by_query = curl("GET", "/api/2.2/jobs/runs/get-output", query={"run_id": task_run_id})
    by_body = curl("GET", "/api/2.1/jobs/runs/get-output", data={"run_id": task_run_id})

    assert by_query.status_code == by_body.status_code == 200
    assert by_query.json()["notebook_output"] == by_body.json()["notebook_output"]
    assert json.loads(by_query.json()["notebook_output"]["result"])["source"] == "built-in sample"
    assert by_query.json()["metadata"]["job_run_id"] == run_id


def test_runs_get_output_errors(curl, emulator, pipeline_id):
    run_id = start(curl, emulator.job_id, pipeline_id)
    assert error(curl("GET", "/api/2.2/jobs/runs/get-output", query={"run_id": run_id})) == (
        400,
        "INVALID_PARAMETER_VALUE",
        "Retrieving the output of runs with multiple tasks is not supported. "
        "Please retrieve the output of each individual task run instead.",
    )
    assert error(curl("GET", "/api/2.2/jobs/runs/get-output", data={"run_id": 1}))[2] == "Run 1 does not exist."
    assert error(curl("GET", "/api/2.2/jobs/runs/get-output"))[2] == "Missing required field: run_id"


# -- runs/cancel ------------------------------------------------------------------------------


def test_runs_cancel_by_json_body_and_by_query_string(curl, emulator, control, pipeline_id):
    control.put(f"/emulator/faults/pipelines/{pipeline_id}", json={"start_delay_seconds": 60})
    by_body, by_query = start(curl, emulator.job_id, pipeline_id), start(curl, emulator.job_id, pipeline_id)

    assert curl("POST", "/api/2.2/jobs/runs/cancel", data={"run_id": by_body}).json() == {}
    assert curl("POST", "/api/2.1/jobs/runs/cancel", query={"run_id": by_query}).json() == {}

    for run_id in (by_body, by_query):
        assert wait_terminated(curl, run_id)["state"]["result_state"] == "CANCELED"
        assert curl("POST", "/api/2.2/jobs/runs/cancel", data={"run_id": run_id}).json() == {}, "a no-op now"


def test_runs_cancel_errors(curl):
    assert error(curl("POST", "/api/2.2/jobs/runs/cancel", data={})) == (
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing required field: run_id",
    )
    assert error(curl("POST", "/api/2.2/jobs/runs/cancel", data={"run_id": "1"}))[2] == "Run 1 does not exist."
    # The method is part of the endpoint: a GET to runs/cancel is no API at all.
    assert error(curl("GET", "/api/2.2/jobs/runs/cancel", query={"run_id": 1}))[:2] == (404, "ENDPOINT_NOT_FOUND")


# -- jobs/get and jobs/list -----------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.2", "2.1", "2.0"])
def test_jobs_get_by_query_string_and_by_json_body(curl, emulator, version):
    by_query = curl("GET", f"/api/{version}/jobs/get", query={"job_id": emulator.job_id}).json()
    by_body = curl("GET", f"/api/{version}/jobs/get", data={"job_id": str(emulator.job_id)}).json()
    assert by_query == by_body
    assert by_query["job_id"] == emulator.job_id and by_query["settings"]["name"] == "Resonate pipeline"
    assert [task["task_key"] for task in by_query["settings"]["tasks"]] == ["pipeline"]


def test_jobs_get_errors(curl, emulator):
    assert error(curl("GET", "/api/2.2/jobs/get")) == (400, "INVALID_PARAMETER_VALUE", "Missing required field: job_id")
    assert error(curl("GET", "/api/2.2/jobs/get", query={"job_id": 1}))[2] == "Job 1 does not exist."
    status, code, message = error(
        curl("GET", "/api/2.2/jobs/get", query={"job_id": emulator.job_id, "page_token": "x"})
    )
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE") and "page_token" in message


def test_jobs_list_shows_tasks_only_when_asked(curl, emulator):
    name = {"name": "Resonate pipeline"}
    [job] = curl("GET", "/api/2.2/jobs/list", query=name).json()["jobs"]
    assert job["job_id"] == emulator.job_id and "tasks" not in job["settings"]
    [expanded] = curl("GET", "/api/2.2/jobs/list", query={**name, "expand_tasks": "true"}).json()["jobs"]
    assert expanded["settings"]["tasks"][0]["task_key"] == "pipeline"
    assert expanded["has_more"] is False, "2.2 says per job whether it has more tasks than it shows"
    [by_body] = curl("GET", "/api/2.1/jobs/list", data={**name, "expand_tasks": True, "limit": 1}).json()["jobs"]
    assert by_body == {key: value for key, value in expanded.items() if key != "has_more"}


def test_jobs_list_filters_by_exact_name_ignoring_case(curl, emulator):
    [job] = curl("GET", "/api/2.2/jobs/list", query={"name": "RESONATE pipeline"}).json()["jobs"]
    assert job["job_id"] == emulator.job_id
    assert curl("GET", "/api/2.2/jobs/list", query={"name": "Resonate"}).json() == {}
    # 2.1 still says has_more at the top; 2.2 has page tokens instead.
    assert curl("GET", "/api/2.1/jobs/list", query={"name": "Resonate"}).json() == {"has_more": False}
    assert curl("GET", "/api/2.2/jobs/list", query={"offset": 100}).json().get("jobs") is None


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 1001}, "The supplied offset 1001 has exceeded the value of 1000"),
        ({"expand_tasks": "yes"}, "boolean"),
        ({"page_token": "x"}, "page_token"),
    ],
)
def test_jobs_list_errors(curl, query, words):
    status, code, message = error(curl("GET", "/api/2.2/jobs/list", query=query))
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE") and words in message


# -- authentication, versions and paths -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/2.2/jobs/run-now"),
        ("GET", "/api/2.2/jobs/runs/get?run_id=1"),
        ("GET", "/api/2.1/jobs/runs/get-output?run_id=1"),
        ("POST", "/api/2.0/jobs/runs/cancel"),
        ("GET", "/api/2.2/jobs/get?job_id=1"),
        ("GET", "/api/2.2/jobs/list"),
    ],
)
def test_every_endpoint_wants_the_bearer_header(curl, method, path):
    assert error(curl(method, path, token=None)) == (
        401,
        401,
        "Credential was not sent or was of an unsupported type for this API.",
    )
    assert error(curl(method, path, token="dapi-not-this-one")) == (403, 403, "Invalid access token.")


def test_paths_the_api_does_not_have_and_endpoints_the_emulator_does_not_model(curl):
    assert error(curl("GET", "/api/2.2/jobs/nope")) == (
        404,
        "ENDPOINT_NOT_FOUND",
        "No API found for 'GET /api/2.2/jobs/nope'",
    )
    assert error(curl("GET", "/api/2.3/jobs/get", query={"job_id": 1}))[:2] == (404, "ENDPOINT_NOT_FOUND")
    status, code, message = error(curl("POST", "/api/2.2/jobs/runs/submit", data={"run_name": "x"}))
    assert (status, code) == (501, "NOT_IMPLEMENTED") and "POST /api/2.2/jobs/runs/submit" in message
