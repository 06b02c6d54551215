"""A failed run repaired and carried on, on the compose stack: automatically, by a person, abandoned, expired.

The emulator's repairs rerun the failed tasks of the same run (and those
depending on them); its fault plans fail a task's first attempt only, so a
repair can succeed. The test stack's catalogue shortens the backoffs and
word-frequencies' repair window (tests.support.stack.STACK_CATALOGUE_CHANGES).
"""

from __future__ import annotations

from tests.support.stack import Stack
from tests.support.stack_clients import Emulator, Gateway, MailSink, new_id

#: A driver lost on the first attempt: a cloud failure, worth an automatic repair.
LOST_DRIVER_ONCE = {"code": "DRIVER_ERROR", "fail_attempts": 1, "message": "The driver was lost"}


def attempts_of(emulated: dict, task_key: str) -> list[dict]:
    return sorted((t for t in emulated["tasks"] if t["task_key"] == task_key), key=lambda t: t["attempt_number"])


def test_a_transient_failure_is_repaired_automatically_to_success(
    gateway: Gateway, emulator: Emulator, mail: MailSink
) -> None:
    pipeline_id = new_id("flaky")
    emulator.plan(pipeline_id, tasks={"pipeline": LOST_DRIVER_ONCE})

    gateway.start(pipeline_id)

    done = gateway.wait_for(pipeline_id, "succeeded", timeout=90)
    assert done["result"]["row_count"] > 0
    assert [(a["number"], a["by"], a["outcome"]) for a in done["attempts"]] == [
        (0, None, "failure"),
        (1, "automatic", "success"),
    ]
    emulated = emulator.run(done["databricks"]["run_id"])
    assert len(emulated["repairs"]) == 1 and len(attempts_of(emulated, "pipeline")) == 2
    [email] = mail.messages(pipeline_id)
    assert "succeeded" in email["subject"] and "after 1 repair" in email["text"]


def test_a_notebook_bug_awaits_a_person_who_repairs_it_with_a_changed_parameter(
    gateway: Gateway, emulator: Emulator, mail: MailSink
) -> None:
    pipeline_id = new_id("typo")
    gateway.start(pipeline_id, parameters={"source": "/Workspace/Shared/pipelines/samples/missing.csv"})

    awaiting = gateway.wait_for(pipeline_id, "awaiting_repair")
    assert awaiting["error"]["type"] == "FileNotFoundError" and awaiting["repair_deadline"]
    notice = mail.wait_for(pipeline_id)
    assert "awaiting repair" in notice["subject"] and f"/pipelines/{pipeline_id}/repair" in notice["text"]
    cancel = gateway.http.post(f"/pipelines/{pipeline_id}/cancel")
    assert (cancel.status_code, cancel.json()["code"]) == (409, "pipeline_awaiting_repair")

    # The right path: the sample the development stack's workspace holds.
    fixed = {"source": "/Workspace/Shared/pipelines/samples/customers.csv"}
    repaired = gateway.http.post(f"/pipelines/{pipeline_id}/repair", json={"parameters": fixed})
    assert repaired.status_code == 202, repaired.text

    done = gateway.wait_for(pipeline_id, "succeeded", timeout=90)
    assert (done["result"]["source"], done["result"]["row_count"]) == (fixed["source"], 8)
    # What the run now uses, and what it was started with (issue 20, finding 7: it showed only the start's).
    assert done["parameters"] == fixed
    assert done["parameters_at_start"] == {"source": "/Workspace/Shared/pipelines/samples/missing.csv"}
    last = done["attempts"][-1]
    assert (last["number"], last["by"], last["parameters"]) == (1, "key:dev", fixed)
    emulated = emulator.run(done["databricks"]["run_id"])
    assert len(emulated["repairs"]) == 1, "one run, repaired once; never a second run"
    assert emulator.counters(pipeline_id)["runs"] == 1
    first, second = sorted(mail.messages(pipeline_id), key=lambda m: m["received_at_ms"])
    reply_to = dict((k.lower(), v) for k, v in second["headers"]).get("in-reply-to")
    assert reply_to == first["message_id"], "the outcome replies to the notice: one conversation"


def test_abandon_ends_it_failed_and_tells_the_owner(gateway: Gateway, mail: MailSink) -> None:
    pipeline_id = new_id("giveup")
    gateway.start(pipeline_id, parameters={"source": "/Workspace/Shared/pipelines/samples/missing.csv"})
    gateway.wait_for(pipeline_id, "awaiting_repair")

    assert gateway.http.post(f"/pipelines/{pipeline_id}/abandon").status_code == 202

    done = gateway.wait_for(pipeline_id, "failed")
    assert done["error"]["type"] == "Abandoned" and "key:dev" in done["error"]["message"]
    again = gateway.http.post(f"/pipelines/{pipeline_id}/repair")
    assert (again.status_code, again.json()["code"]) == (409, "not_awaiting_repair")
    assert len(mail.messages(pipeline_id)) == 2


def test_a_repair_window_that_ends_fails_the_pipeline_with_the_reason(gateway: Gateway, emulator: Emulator) -> None:
    pipeline_id = new_id("expires")
    emulator.plan(pipeline_id, tasks={"count": {"fail": True}})
    gateway.start(pipeline_id, job="word-frequencies", parameters={"text": "a b"})

    gateway.wait_for(pipeline_id, "awaiting_repair")
    done = gateway.wait_for(pipeline_id, "failed", timeout=60)  # the stack's window: 8 s

    assert done["error"]["type"] == "RepairWindowExpired"


def test_only_the_owner_may_decide_and_only_while_it_awaits(gateway: Gateway, stack: Stack) -> None:
    pipeline_id = new_id("mine")
    gateway.start(pipeline_id)
    gateway.wait_for(pipeline_id, "succeeded")
    finished = gateway.http.post(f"/pipelines/{pipeline_id}/repair")
    assert (finished.status_code, finished.json()["code"]) == (409, "not_awaiting_repair")

    other = {"authorization": f"Bearer {stack.keys.keys['other']}"}
    for action in ("repair", "abandon"):
        response = gateway.http.post(f"/pipelines/{pipeline_id}/{action}", headers=other)
        assert response.status_code == 404, response.text
    reader = {"authorization": f"Bearer {stack.keys.keys['reader']}"}
    assert gateway.http.post(f"/pipelines/{pipeline_id}/abandon", headers=reader).status_code == 403


def test_a_multi_task_repair_reruns_only_the_failed_task_and_its_dependents(stack: Stack, emulator: Emulator) -> None:
    admin = Gateway(stack.api_url)
    admin.http.headers["authorization"] = f"Bearer {stack.keys.keys['admin']}"
    pipeline_id = new_id("partial")
    emulator.plan_run_of(pipeline_id, tasks={"aggregate": LOST_DRIVER_ONCE})

    admin.start(pipeline_id, job="customer-report", parameters={"customer": "C-7"})

    done = admin.wait_for(pipeline_id, "succeeded", timeout=120)
    emulated = emulator.run(done["databricks"]["run_id"])
    assert len(attempts_of(emulated, "extract")) == 1, "a task that succeeded is not rerun"
    assert len(attempts_of(emulated, "aggregate")) == 2 and len(attempts_of(emulated, "publish")) >= 1
    assert done["attempts"][1]["rerun_tasks"][:1] == ["aggregate"]
    assert done["result"]["published"] is True
