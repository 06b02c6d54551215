"""Figures 8 and 9 of the benchmark: the shapes' roots and callbacks, and the arithmetic over their counts.

In process, no stack: what the benchmark sends and how it turns counts into figures.
"""

from __future__ import annotations

import json

import pytest

from pipeline_shared.catalogue import Catalogue
from pipeline_shared.signing import CallbackSignatureError, derive_callback_key, verify_callback
from tests.benchmark.bench_clients import (
    CALLBACK_RESULT,
    RESONATE_TABLES,
    SIGNING_SECRET,
    callback_promise_for,
    signed_callback,
)
from tests.benchmark.bench_code import (
    CATALOGUE_FILE,
    calls_between,
    fit_per_shape,
    gate_request_id,
    requests_per_unit,
    spec_of,
    trigger_ids,
)
from tests.benchmark.bench_shapes import LEGACY, ONBOARDING, ONE_JOB, one_job_shape


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load(CATALOGUE_FILE)


def test_the_callback_promise_hangs_off_the_pipeline_or_off_its_job_step() -> None:
    assert callback_promise_for("p1") == "p1:1"
    assert callback_promise_for("p1", "1") == "p1:1.1"
    assert callback_promise_for("p1", "3") == "p1:3.1"


def test_a_steps_callback_is_signed_with_the_key_of_the_steps_promise() -> None:
    callback = signed_callback("p1", "2", {"score": 10})
    body = json.loads(callback.body)
    assert body == {"promise_id": "p1:2.1", "status": "success", "result": {"score": 10}}
    verify_callback(derive_callback_key(SIGNING_SECRET, "p1:2.1"), callback.body, callback.headers)
    with pytest.raises(CallbackSignatureError):
        verify_callback(derive_callback_key(SIGNING_SECRET, "p1:1"), callback.body, callback.headers)
    assert callback.step == "2"


def test_each_shape_is_started_as_the_gateway_starts_it(catalogue: Catalogue) -> None:
    legacy = spec_of(LEGACY, "p1", catalogue)
    one_job = spec_of(ONE_JOB, "p2", catalogue)
    onboarding = spec_of(ONBOARDING, "p3", catalogue, approval_threshold="0")
    assert (LEGACY.function_version, legacy.version, legacy.job) == (1, None, "csv-statistics")
    assert (ONE_JOB.function_version, one_job.version, one_job.job) == (3, 1, "csv-statistics")
    assert (ONBOARDING.function_version, onboarding.version, onboarding.job) == (3, 1, "customer-onboarding")
    # Defaults filled in by the catalogue, the start's own values kept.
    assert onboarding.parameters == {"upload": "", "approval_threshold": "0"}
    assert spec_of(ONBOARDING, "p4", catalogue).parameters["approval_threshold"] == "100"
    assert onboarding.timeout_seconds == catalogue.pipeline("customer-onboarding").default_timeout_seconds
    assert legacy.parameters == one_job.parameters


def test_onboarding_is_called_back_ingest_first_then_the_pair_with_what_each_job_reports() -> None:
    assert (LEGACY.jobs, ONE_JOB.jobs, ONBOARDING.jobs) == (1, 1, 3)
    first = ONBOARDING.callbacks(["p1", "p2"], 0)
    assert [(c.pipeline_id, json.loads(c.body)["promise_id"]) for c in first] == [("p1", "p1:1.1"), ("p2", "p2:1.1")]
    assert json.loads(first[0].body)["result"]["table"].startswith("/Volumes/main/onboarding/ingested/")
    pair = ONBOARDING.callbacks(["p1"], 1)
    assert [json.loads(c.body)["promise_id"] for c in pair] == ["p1:2.1", "p1:3.1"]
    assert json.loads(pair[0].body)["result"] == {"score": 10}
    (legacy,) = LEGACY.callbacks(["p1"], 0)
    assert json.loads(legacy.body) == {"promise_id": "p1:1", "status": "success", "result": CALLBACK_RESULT}


def test_the_shape_the_gateway_started_says_where_the_callback_and_the_email_are() -> None:
    legacy, by_code = one_job_shape(None), one_job_shape(1)
    assert (legacy, by_code) == (LEGACY, ONE_JOB)
    assert (legacy.callback_promise("p1"), legacy.email_rpc("p1")) == ("p1:1", "p1:4")
    assert (by_code.callback_promise("p1"), by_code.email_rpc("p1")) == ("p1:1.1", "p1:2")
    assert json.loads(by_code.first_callback("p1").body)["promise_id"] == "p1:1.1"
    assert json.loads(legacy.first_callback("p1").body)["result"] == CALLBACK_RESULT
    assert ONBOARDING.email_rpc("p1") == "p1:5"


def test_a_pipeline_waits_once_its_runs_are_triggered_or_its_gate_has_asked() -> None:
    assert trigger_ids("p1", (None,)) == ["p1:2"]
    assert trigger_ids("p1", ("2", "3")) == ["p1:2.2", "p1:3.2"]
    assert gate_request_id("p1") == "p1:4.3"


def test_requests_are_counted_between_readings_less_the_idle_rate() -> None:
    before = {"resonate_rpc": 100, "promise_create": 40}
    after = {"resonate_rpc": 330, "promise_create": 90, "task_acquire": 20, "promise_get": 5}
    calls = calls_between(before, after)
    assert calls == {"resonate_rpc": 230, "promise_create": 50, "task_acquire": 20, "promise_get": 5}
    per = requests_per_unit(calls, {"resonate_rpc": 1.0, "promise_get": 1.0}, seconds=30, units=10)
    assert per == {"promise_create": 5.0, "promise_get": 0.0, "resonate_rpc": 20.0, "task_acquire": 2.0}


def _sample(one_job: int, onboarding: int, worker: float, promises: float, blocks: float = 5000.0) -> dict:
    return {
        "waiting": {"one_job": one_job, "onboarding": onboarding},
        "memory_bytes": {"api": 1000.0, "worker": worker},
        "python_blocks": {"worker": blocks},
        "rows": dict.fromkeys(RESONATE_TABLES, 0) | {"promises": promises},
        "bytes": dict.fromkeys(RESONATE_TABLES, 0),
        "database_bytes": 8000 + promises * 100,
    }


def test_what_one_more_waiting_pipeline_holds_is_separated_by_shape() -> None:
    # worker: 50 bytes per one-job, 20 per onboarding; promises: 5 and 14 rows.
    counts = [(0, 0), (250, 0), (250, 250), (500, 250), (500, 500)]
    samples = [_sample(a, b, 10_000 + 50 * a + 20 * b, 5 * a + 14 * b, 5000 + 3 * b) for a, b in counts]
    fit = fit_per_shape(samples)
    assert fit["one_job"]["python_blocks"]["worker"] == pytest.approx(0, abs=1e-9)
    assert fit["onboarding"]["python_blocks"]["worker"] == pytest.approx(3)
    assert fit["one_job"]["memory_bytes"]["worker"] == pytest.approx(50)
    assert fit["onboarding"]["memory_bytes"]["worker"] == pytest.approx(20)
    assert fit["onboarding"]["memory_bytes"]["api"] == pytest.approx(0, abs=1e-9)
    assert fit["one_job"]["rows"]["promises"] == pytest.approx(5)
    assert fit["onboarding"]["rows"]["promises"] == pytest.approx(14)
    assert fit["onboarding"]["database_bytes"] == pytest.approx(1400)


def test_shapes_that_always_grew_together_are_not_separated() -> None:
    samples = [_sample(n, n, 10_000 + 70 * n, 19 * n) for n in (0, 100, 200, 300)]
    assert fit_per_shape(samples)["onboarding"]["memory_bytes"] is None
