"""The check every emulator answer passes through catches what databricks-sdk would misread."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.sdk_model_check import SdkModelCheck, check_answer, problems_logged

RUN = {"run_id": 7, "state": {"life_cycle_state": "RUNNING", "state_message": ""}}


def test_an_answer_the_model_reads_back_whole_passes():
    assert check_answer("GET", "/api/2.2/jobs/runs/get", 200, RUN) == []


def test_a_field_the_model_does_not_know_is_named():
    problems = check_answer("GET", "/api/2.1/jobs/runs/get", 200, {**RUN, "format": "MULTI_TASK"})
    assert problems == [".format: not in the SDK model"]


def test_an_enum_value_the_model_does_not_know_is_named():
    run = {"run_id": 7, "state": {"life_cycle_state": "EXPLODED"}}
    [problem] = check_answer("GET", "/api/2.2/jobs/runs/get", 200, run)
    assert problem.startswith(".state.life_cycle_state")


def test_nested_fields_are_checked_too():
    output = {"metadata": {**RUN, "task_key": "pipeline"}, "notebook_output": {"result": "{}"}}
    assert check_answer("GET", "/api/2.2/jobs/runs/get-output", 200, output) == [
        ".metadata.task_key: not in the SDK model"
    ]


def test_errors_must_have_the_shape_the_sdk_parses():
    good = {"error_code": "INVALID_PARAMETER_VALUE", "message": "Run 1 does not exist."}
    assert check_answer("GET", "/api/2.2/jobs/runs/get", 400, good) == []
    assert check_answer("GET", "/api/2.2/jobs/runs/get", 400, {"detail": "nope"}) == [
        ".detail: not read by any client",
        ".error_code: missing",
        ".message: missing",
        ".message: not a string",
    ]


def test_cancel_answers_an_empty_object():
    assert check_answer("POST", "/api/2.2/jobs/runs/cancel", 200, {}) == []
    assert check_answer("POST", "/api/2.2/jobs/runs/cancel", 200, {"ok": True}) != []


async def test_the_middleware_replaces_a_stray_answer_and_logs_it(tmp_path):
    async def stray(request):  # type: ignore[no-untyped-def]
        return JSONResponse({**RUN, "format": "MULTI_TASK"})

    app = Starlette(routes=[Route("/api/2.2/jobs/runs/get", stray), Route("/emulator/x", stray)])
    log = tmp_path / "problems.jsonl"
    transport = httpx.ASGITransport(SdkModelCheck(app, log))
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        answer = await client.get("/api/2.2/jobs/runs/get")
        control = await client.get("/emulator/x")

    assert answer.status_code == 500
    assert answer.json()["error_code"] == "EMULATOR_ANSWER_OUTSIDE_SDK_MODEL"
    assert ".format: not in the SDK model" in answer.json()["message"]
    [logged] = problems_logged(log)
    assert logged["path"] == "/api/2.2/jobs/runs/get" and logged["status"] == 200
    assert control.status_code == 200, "the control API is not Databricks'"
