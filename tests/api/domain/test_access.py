"""The access rules (pipeline_api.domain.access): who may start which job, and what a start must carry.

Each refusal is audited before it is raised, and says which field was wrong;
the JSON route and the web page's form both call these, so these tests hold
both faces to one decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline_api.auth.principals import Principal, Scope
from pipeline_api.domain.access import InvalidRequest, checked_start, may_start
from pipeline_api.domain.limits import RecipientDomains
from pipeline_api.schemas import PipelineRequest
from pipeline_shared.catalogue import Catalogue
from pipeline_shared.errors import InsufficientScope, PipelineError
from tests.support.pipeline_harness import CATALOGUE_FILE

CATALOGUE = Catalogue.load(CATALOGUE_FILE)
STARTER = Principal(kind="key", name="starter", scopes=frozenset({Scope.START, Scope.READ}))
ADMIN = Principal(kind="key", name="operator", scopes=frozenset({Scope.ADMIN}))
ANY_DOMAIN = RecipientDomains(exact=None)
SAMPLE = {"source": "/Workspace/Shared/pipelines/samples/customers.csv"}


class Audit:
    """The audit log as the HTTP layer keeps it: each refusal with whom and why."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str | None, str]] = []

    def __call__(self, error: PipelineError, principal: Principal | None, why: str) -> None:
        self.lines.append((type(error).__name__, principal.id if principal else None, why))


def start(principal: Principal = STARTER, recipients: RecipientDomains = ANY_DOMAIN, **body: Any) -> Any:
    document = PipelineRequest.model_validate({"email": "someone@example.com"} | body)
    return checked_start(CATALOGUE, recipients, principal, document, Audit())


def test_a_job_is_startable_with_any_one_of_its_scopes_and_admin_starts_every_job() -> None:
    report = CATALOGUE.job("customer-report")  # start_scopes = ["admin"]
    statistics = CATALOGUE.job("csv-statistics")  # start_scopes = ["start"]

    assert may_start(STARTER, statistics) and not may_start(STARTER, report)
    assert may_start(ADMIN, statistics) and may_start(ADMIN, report)


def test_a_start_resolves_the_default_job_its_parameters_and_its_timeout() -> None:
    request = start(parameters=SAMPLE)

    assert (request.job.name, request.parameters, request.principal) == ("csv-statistics", SAMPLE, STARTER)
    assert request.timeout_seconds == CATALOGUE.job("csv-statistics").default_timeout_seconds


def test_a_job_the_caller_may_not_start_is_refused_and_audited_before_anything_else() -> None:
    audit = Audit()
    document = PipelineRequest.model_validate(
        {"email": "someone@example.com", "job": "customer-report", "parameters": {"customer": "not-an-id"}}
    )

    with pytest.raises(InsufficientScope) as refused:
        checked_start(CATALOGUE, ANY_DOMAIN, STARTER, document, audit)

    assert "starting job 'customer-report' needs the 'admin' scope" in refused.value.message
    assert audit.lines == [("InsufficientScope", "key:starter", "may not start job customer-report")]


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"job": "no-such-job"}, ("body", "job"), "unknown_job"),
        ({"parameters": {"source": "/etc/passwd"}}, ("body", "parameters", "source"), "invalid_parameter"),
        ({"parameters": {"sep": ","}}, ("body", "parameters", "sep"), "invalid_parameter"),
        (
            {"job": "word-frequencies", "parameters": {"text": "x"}, "timeout_seconds": 86401},
            ("body", "timeout_seconds"),
            "invalid_parameter",
        ),
    ],
)
def test_what_does_not_fit_the_job_is_refused_at_its_field(
    body: dict[str, Any], loc: tuple[str, ...], kind: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        start(**body)

    [problem] = refused.value.problems
    assert (problem["loc"], problem["type"]) == (loc, kind), problem


def test_a_recipient_outside_the_operators_domains_is_refused_at_the_email_field() -> None:
    allowed = RecipientDomains(exact=frozenset({"example.com"}), parents=frozenset({".corp.example"}))

    assert start(recipients=allowed, email="a@example.com").request.email == "a@example.com"
    assert start(recipients=allowed, email="a@eu.corp.example").request.email == "a@eu.corp.example"
    with pytest.raises(InvalidRequest) as refused:
        start(recipients=allowed, email="a@example.org")

    [problem] = refused.value.problems
    assert (problem["loc"], problem["type"]) == (("body", "email"), "recipient_not_allowed")
    assert "'example.org'" in problem["msg"]


def test_an_id_a_schedules_firing_would_take_is_refused_at_the_id_field(tmp_path: Path) -> None:
    scheduled = tmp_path / "catalogue.toml"
    scheduled.write_text(
        CATALOGUE_FILE.read_text()
        + '\n[pipelines.yearly]\ntitle = "Yearly"\ndescription = "Once a year."\njobs = ["csv-statistics"]\n'
        + '[pipelines.yearly.schedule]\ncron = "0 3 1 1 *"\nemail = "ops@example.com"\n'
    )
    catalogue = Catalogue.load(scheduled)

    def start_as(pipeline_id: str) -> Any:
        document = PipelineRequest.model_validate({"email": "someone@example.com", "id": pipeline_id})
        return checked_start(catalogue, ANY_DOMAIN, STARTER, document, Audit())

    assert start_as("yearly-report").request.id == "yearly-report"
    with pytest.raises(InvalidRequest) as refused:
        start_as("yearly-20270101T0300")

    [problem] = refused.value.problems
    assert (problem["loc"], problem["type"]) == (("body", "id"), "scheduled_id")
