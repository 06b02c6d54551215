"""Hostile parameters on the compose stack: files, internal URLs and out-of-range values as job inputs.

Issue 20's first finding: ``csv-statistics``' ``source`` read ``/etc/passwd``,
and ``http://127.0.0.1:8080/emulator/runs?pipeline_id=X`` handed out pipeline
X's callback signing key. Each refusal here is asserted with what did not
happen: no pipeline, no run in the emulator, no email, a pipeline awaiting
repair left as it was. Every request goes to 127.0.0.1 or the stack's own
containers; the addresses the rule refuses are never connected to (the
notebook refuses before it connects, which tests/databricks_emulator/
test_pipeline_sources.py shows against a receiver that counts requests).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from pipeline_shared import promise_tree
from pipeline_shared.signing import derive_callback_key
from tests.support.stack_clients import SIGNING_SECRET, Emulator, Gateway, MailSink, new_id

#: What the gateway must refuse, by job and parameter, and the rule its 422 names.
REFUSED_AT_START = [
    ("csv-statistics", "source", "/etc/passwd", "must be a path under /Workspace/Shared/pipelines/"),
    ("csv-statistics", "source", "file:///etc/passwd", "is a URL of scheme 'file'"),
    (
        "csv-statistics",
        "source",
        "http://127.0.0.1:8080/emulator/runs?pipeline_id=victim",
        "is a URL of scheme 'http'; the schemes allowed are https",
    ),
    ("csv-statistics", "source", "http://data.example.com/a.csv", "is a URL of scheme 'http'"),
    ("csv-statistics", "source", "https://unlisted.example.com/a.csv", "host 'unlisted.example.com', which is not"),
    ("csv-statistics", "source", "https://169.254.169.254/latest/meta-data/", "host '169.254.169.254', which is not"),
    ("csv-statistics", "source", "/Workspace/Shared/other/a.csv", "must be a path under /Workspace/Shared/pipelines/"),
    ("csv-statistics", "source", "/Workspace/Shared/pipelines/../../../etc/passwd", "without '.' or '..' segments"),
    ("word-frequencies", "top", "500", "is 500; it must be from 1 to 100"),
    ("word-frequencies", "top", "1e2", "must be a whole number from 1 to 100"),
    ("nightly-refresh", "table", "payroll", "must be one of 'sales', 'inventory', 'customers'"),
]
#: A word-frequencies run needs its text.
REQUIRED = {"word-frequencies": {"text": "to be or not to be"}}
#: The development stack's sample, and a path beside it that is not there.
SAMPLE = "/Workspace/Shared/pipelines/samples/customers.csv"
MISSING = "/Workspace/Shared/pipelines/samples/missing.csv"


def assert_refused(response: httpx.Response, parameter: str, rule: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request", body
    assert body["message"].startswith(f"body.parameters.{parameter}: ") and rule in body["message"], body


def assert_nothing_started(gateway: Gateway, emulator: Emulator, mail: MailSink, pipeline_id: str) -> None:
    assert gateway.http.get(f"/pipelines/{pipeline_id}").status_code == 404, "no pipeline"
    assert emulator.counters(pipeline_id)["run_now_calls"] == 0 and emulator.runs(pipeline_id) == [], "no run"
    assert mail.messages(pipeline_id) == [], "no email"


@pytest.mark.parametrize(("job", "parameter", "value", "rule"), REFUSED_AT_START)
def test_a_start_with_a_parameter_outside_its_rule_is_422_naming_it_and_starts_nothing(
    gateway: Gateway, emulator: Emulator, mail: MailSink, job: str, parameter: str, value: str, rule: str
) -> None:
    pipeline_id = new_id("hostile-start")

    response = gateway.start(pipeline_id, job=job, parameters=REQUIRED.get(job, {}) | {parameter: value})

    assert_refused(response, parameter, rule)
    assert_nothing_started(gateway, emulator, mail, pipeline_id)


def awaiting_repair(gateway: Gateway, pipeline_id: str, **body: Any) -> dict[str, Any]:
    assert gateway.start(pipeline_id, **body).status_code == 202
    return gateway.wait_for(pipeline_id, "awaiting_repair", timeout=90)


def test_a_repair_with_a_parameter_outside_its_rule_is_422_and_changes_nothing(
    gateway: Gateway, emulator: Emulator
) -> None:
    # A path inside the folder that is not there: the run fails and waits for a person.
    pipeline_id = new_id("hostile-repair")
    before = awaiting_repair(gateway, pipeline_id, parameters={"source": MISSING})
    words_id = new_id("hostile-repair-top")
    emulator.plan(words_id, tasks={"count": {"fail": True}})
    words_before = awaiting_repair(gateway, words_id, job="word-frequencies", parameters=REQUIRED["word-frequencies"])

    for _, parameter, value, rule in REFUSED_AT_START:
        if parameter == "source":
            refused = gateway.http.post(f"/pipelines/{pipeline_id}/repair", json={"parameters": {parameter: value}})
            assert_refused(refused, parameter, rule)
        elif parameter == "top":
            refused = gateway.http.post(f"/pipelines/{words_id}/repair", json={"parameters": {parameter: value}})
            assert_refused(refused, parameter, rule)

    for unchanged_id, doc in ((pipeline_id, before), (words_id, words_before)):
        assert gateway.status(unchanged_id) == doc, "still awaiting repair, as it was"
        [run] = emulator.runs(unchanged_id)
        assert run["repairs"] == [], "Databricks was never asked to repair"

    # The right path repairs it: the sample the development stack's workspace holds.
    repaired = gateway.http.post(f"/pipelines/{pipeline_id}/repair", json={"parameters": {"source": SAMPLE}})
    assert repaired.status_code == 202, repaired.text
    done = gateway.wait_for(pipeline_id, "succeeded", timeout=90)
    assert (done["result"]["source"], done["result"]["row_count"]) == (SAMPLE, 8)
    assert gateway.http.post(f"/pipelines/{words_id}/abandon").status_code == 202


def bare(emulator: Emulator, path: str) -> str:
    """The emulator's URL for ``path``, for a client without its token."""
    return str(emulator.http.base_url).rstrip("/") + path


def pipeline_job_id(emulator: Emulator) -> int:
    jobs = emulator.http.get("/healthz").json()["jobs"]
    [job_id] = [int(job_id) for job_id, name in jobs.items() if name == "Resonate pipeline"]
    return job_id


def ended(emulator: Emulator, run_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = emulator.run(run_id)
        if run["result_state"] is not None:
            return run
        assert time.monotonic() < deadline, f"run {run_id} did not end: {run}"
        time.sleep(0.2)


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("http://127.0.0.1:8080/emulator/runs?pipeline_id={victim}", "scheme 'http' is not allowed"),
        ("https://127.0.0.1:8080/emulator/runs?pipeline_id={victim}", "host '127.0.0.1' is not allowed"),
        ("/proc/self/environ", "not under an allowed folder"),
        ("/Workspace/Shared/pipelines/../../../proc/self/environ", "not under an allowed folder"),
        ("file:///etc/passwd", "a file: URL is refused"),
    ],
)
def test_a_run_started_past_the_gateway_is_refused_by_the_notebook(
    gateway: Gateway, emulator: Emulator, source: str, says: str
) -> None:
    # A victim pipeline waiting for its callback: the attacker wants its signing key.
    victim = new_id("victim")
    emulator.plan(victim, notebook="hang")
    assert gateway.start(victim, timeout_seconds=120).status_code == 202
    before = gateway.wait_for(victim, "waiting")
    victim_key = derive_callback_key(
        SIGNING_SECRET, promise_tree.callback_promise_id(promise_tree.step_base(victim, "1"))
    )

    # Someone holding a Jobs API token calls run-now directly, with no pipeline behind it.
    started = emulator.http.post(
        "/api/2.2/jobs/run-now",
        json={"job_id": pipeline_job_id(emulator), "job_parameters": {"source": source.format(victim=victim)}},
    )
    assert started.status_code == 200, started.text
    run = ended(emulator, started.json()["run_id"])

    [task] = run["tasks"]
    assert run["result_state"] == "FAILED" and task["error"]["type"] == "SourceRefused", task
    assert says in task["error"]["message"]
    assert victim_key not in str(run) and "root:" not in str(run), "nothing was read"
    # The emulator's control routes, where the key would have been, need its token and redact it.
    assert httpx.get(bare(emulator, "/emulator/runs"), params={"pipeline_id": victim}).status_code == 401
    [listed] = emulator.runs(victim)
    assert listed["job_parameters"]["callback_signing_key"] == "(redacted)"
    after = gateway.status(victim)
    assert (after["state"], after["result"], after["attempts"]) == (before["state"], None, before["attempts"])
    gateway.http.post(f"/pipelines/{victim}/cancel")


@pytest.mark.parametrize("path", ["/emulator/runs", "/emulator/faults", "/emulator/pipelines/x", "/emulator/oauth"])
def test_the_emulators_control_routes_refuse_a_caller_without_its_token(emulator: Emulator, path: str) -> None:
    url = bare(emulator, path)
    before = emulator.http.get("/emulator/faults").json()

    without = httpx.get(url)
    wrong = httpx.get(url, headers={"authorization": "Bearer dapi-guess"})
    changed = httpx.put(bare(emulator, "/emulator/faults"), json={"notebook": "fail"})

    assert (without.status_code, wrong.status_code, changed.status_code) == (401, 403, 401)
    assert all(set(r.json()) == {"error_code", "message"} for r in (without, wrong, changed))
    assert emulator.http.get("/emulator/faults").json() == before, "no plan changed"
