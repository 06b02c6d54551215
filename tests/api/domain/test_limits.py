"""The start limits and the recipient domains: how settings read, and what the gateway does with a refusal.

The counting itself is SQL (``pipelines.admit_start``) and is tested on the
stack (tests/integration/hostile/test_limits.py); here the gateway is given
an admission that refuses on demand, and shows that a refused start is a 429
with ``Retry-After`` that creates nothing, and that a repeated start is never
asked about.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from pipeline_api.auth.keys import DEVELOPMENT_API_KEY
from pipeline_api.domain.limits import (
    DatabaseStartAdmission,
    PrincipalLimits,
    RecipientDomains,
    StartLimits,
    raise_if_refused,
    retry_after_header,
)
from pipeline_api.settings import GatewaySettings
from pipeline_shared.errors import StartRateLimited, TooManyWaiting
from tests.support.gateway_app import in_process_app
from tests.support.pipeline_harness import CATALOGUE_FILE, SECRET, UNUSED_DATABASE_URL, Harness

AUTHENTICATED = {"authorization": f"Bearer {DEVELOPMENT_API_KEY}"}


def settings(**overrides: Any) -> GatewaySettings:
    return GatewaySettings(
        **{
            "RESONATE_DATABASE_URL": UNUSED_DATABASE_URL,
            "CALLBACK_SIGNING_SECRET": SECRET,
            "JOB_CATALOGUE_FILE": CATALOGUE_FILE,
        }
        | overrides
    )


# ── settings ─────────────────────────────────────────────────────────────────


def test_a_principal_has_the_default_limits_unless_named() -> None:
    limits = StartLimits.from_settings(
        settings(START_RATE_PER_MINUTE=30, PIPELINES_WAITING_PER_PRINCIPAL=5, PRINCIPAL_START_LIMITS="svc=600/0, b=1/2")
    )

    assert limits.of("anyone") == PrincipalLimits(30, 5)
    assert limits.of("svc") == PrincipalLimits(600, 0)
    assert limits.of("b") == PrincipalLimits(1, 2)
    assert not limits.of("svc").unlimited
    assert (
        StartLimits.from_settings(settings(START_RATE_PER_MINUTE=0, PIPELINES_WAITING_PER_PRINCIPAL=0))
        .of("x")
        .unlimited
    )


def test_only_a_principal_with_limits_has_its_starts_counted() -> None:
    limits = StartLimits.from_settings(settings(PRINCIPAL_START_LIMITS="key:bulk=0/0"))
    admission = DatabaseStartAdmission(database=None, limits=limits)  # type: ignore[arg-type]  # never reached
    assert admission.counts("key:alice") and not admission.counts("key:bulk")


@pytest.mark.parametrize("entry", ["svc", "svc=10", "svc=ten/2", "=1/2", "svc=1/-2"])
def test_an_unreadable_principal_limit_stops_the_gateway_naming_the_variable(entry: str) -> None:
    with pytest.raises(ValidationError, match=r"PRINCIPAL_START_LIMITS: .* is not principal=RATE/WAITING"):
        settings(PRINCIPAL_START_LIMITS=entry)


def test_outside_development_recipient_domains_are_required() -> None:
    with pytest.raises(ValidationError, match=r"RECIPIENT_DOMAINS is required for ENVIRONMENT=production"):
        settings(ENVIRONMENT="production", API_KEYS_FILE=None, OIDC_ISSUER="https://id.example", OIDC_AUDIENCE="a")


def test_a_schedule_emailing_a_domain_the_gateway_may_not_email_stops_it_naming_the_pipeline(tmp_path: Path) -> None:
    scheduled = tmp_path / "catalogue.toml"
    scheduled.write_text(
        CATALOGUE_FILE.read_text(encoding="utf-8")
        + '\n[pipelines.customer-onboarding.schedule]\ncron = "30 2 * * *"\nemail = "ops@example.com"\n',
        encoding="utf-8",
    )
    refusal = r"the schedule of pipeline 'customer-onboarding': the domain 'example.com' is not one this gateway"
    with pytest.raises(ValidationError, match=refusal):
        settings(JOB_CATALOGUE_FILE=scheduled, RECIPIENT_DOMAINS="example.org")
    assert settings(JOB_CATALOGUE_FILE=scheduled, RECIPIENT_DOMAINS="example.org,example.com").catalogue


@pytest.mark.parametrize("entry", ["user@example.com", "*.example.com", "."])
def test_a_recipient_domain_that_is_not_a_domain_is_refused(entry: str) -> None:
    with pytest.raises(ValidationError, match=r"RECIPIENT_DOMAINS: .* is not a domain"):
        settings(RECIPIENT_DOMAINS=entry)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("a@example.com", True),
        ("a@EXAMPLE.com", True),
        ("a@mail.example.com", False),
        ("a@corp.example.org", True),
        ("a@deep.corp.example.org", True),
        ("a@example.org", False),
        ("a@evilexample.org", False),
        ("a@example.com.evil.net", False),
        ("a@bücher.example.org", True),
    ],
)
def test_recipient_domains_allow_exact_domains_and_the_subdomains_of_dotted_ones(address: str, allowed: bool) -> None:
    domains = RecipientDomains.from_settings(settings(RECIPIENT_DOMAINS="example.com, .example.org"))

    refusal = domains.refusal(address)

    assert (refusal is None) is allowed
    if not allowed:
        assert repr(address.rpartition("@")[2].lower()) in refusal  # type: ignore[operator]


def test_an_internationalized_domain_matches_in_either_form() -> None:
    domains = RecipientDomains.from_settings(settings(RECIPIENT_DOMAINS="bücher.example"))

    assert domains.refusal("a@xn--bcher-kva.example") is None
    assert domains.refusal("a@BÜCHER.example") is None


def test_in_development_any_domain_by_default_and_star_means_any_anywhere() -> None:
    assert RecipientDomains.from_settings(settings()).refusal("a@anything.test") is None
    assert RecipientDomains.from_settings(settings(RECIPIENT_DOMAINS="*")).refusal("a@anything.test") is None


# ── what a refusal says ──────────────────────────────────────────────────────


def test_a_rate_refusal_names_the_limit_and_when_to_come_back() -> None:
    with pytest.raises(StartRateLimited) as refused:
        raise_if_refused(PrincipalLimits(3, 10), "rate", 12.2, 3)

    assert refused.value.code == "start_rate_limited"
    assert refused.value.retry_after_seconds == 13
    assert "at most 3 pipelines a minute" in refused.value.message
    assert "START_RATE_PER_MINUTE" in refused.value.message


def test_a_waiting_refusal_names_the_quota_and_the_count() -> None:
    with pytest.raises(TooManyWaiting) as refused:
        raise_if_refused(PrincipalLimits(3, 10), "waiting", None, 10)

    assert refused.value.code == "too_many_waiting"
    assert "10 of yours are not finished" in refused.value.message
    assert "at most 10" in refused.value.message


def test_an_admitted_start_raises_nothing() -> None:
    raise_if_refused(PrincipalLimits(3, 10), None, None, None)


@pytest.mark.parametrize(("seconds", "header"), [(None, 1), (0.0, 1), (0.2, 1), (1.0, 1), (59.01, 60)])
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(seconds: float | None, header: int) -> None:
    assert retry_after_header(seconds) == header


# ── the gateway with limits ──────────────────────────────────────────────────


class ScriptedAdmission:
    """Admits ``room`` starts, then refuses them as the rate limit would; records what it was asked and counted.

    An id it admitted before is taken, as the database tells it (``pipelines.admit_unless_taken``): not counted.
    """

    def __init__(self, room: int) -> None:
        self.room = room
        self.asked: list[tuple[str, str]] = []
        self.counted: list[tuple[str, str]] = []

    def counts(self, principal_id: str) -> bool:
        return True

    async def admit(self, principal_id: str, pipeline_id: str) -> bool:
        self.asked.append((principal_id, pipeline_id))
        if pipeline_id in {taken for _, taken in self.counted}:
            return False
        if len(self.counted) >= self.room:
            raise_if_refused(PrincipalLimits(self.room, 0), "rate", 41.5, self.room)
        self.counted.append((principal_id, pipeline_id))
        return True


@contextlib.asynccontextmanager
async def gateway_with(admission: ScriptedAdmission, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    harness = Harness(autostart=False)
    app = in_process_app(settings(**overrides), harness, admission=admission)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=AUTHENTICATED) as client:
            yield client


def start_body(**fields: Any) -> dict[str, Any]:
    return {"id": f"lim-{uuid.uuid4().hex[:12]}", "email": "user@example.com", "parameters": {}} | fields


async def test_a_start_over_the_limit_is_429_with_retry_after_and_creates_nothing() -> None:
    admission = ScriptedAdmission(room=1)
    async with gateway_with(admission) as client:
        admitted = await client.post("/pipelines", json=start_body())
        body = start_body()
        refused = await client.post("/pipelines", json=body)
        lookup = await client.get(f"/pipelines/{body['id']}")

    assert admitted.status_code == 202, admitted.text
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "42"
    assert refused.json()["code"] == "start_rate_limited"
    assert "at most 1 pipelines a minute" in refused.json()["message"]
    assert lookup.status_code == 404


async def test_a_repeated_start_is_answered_and_never_counted_nor_refused_by_the_limits() -> None:
    admission = ScriptedAdmission(room=1)
    async with gateway_with(admission) as client:
        body = start_body()
        first = await client.post("/pipelines", json=body)
        repeats = [await client.post("/pipelines", json=body) for _ in range(3)]

    assert first.status_code == 202
    assert [r.status_code for r in repeats] == [200, 200, 200], "the minute's one start is used, yet a repeat is not"
    assert admission.counted == [("key:dev", body["id"])]


async def test_a_recipient_outside_the_allowed_domains_is_422_naming_the_domain_before_any_limit() -> None:
    admission = ScriptedAdmission(room=5)
    async with gateway_with(admission, RECIPIENT_DOMAINS="example.com") as client:
        body = start_body(email="someone@elsewhere.org")
        refused = await client.post("/pipelines", json=body)
        lookup = await client.get(f"/pipelines/{body['id']}")
        allowed = await client.post("/pipelines", json=start_body())

    assert refused.status_code == 422, refused.text
    document = refused.json()
    assert document["code"] == "invalid_request"
    assert document["details"][0]["type"] == "recipient_not_allowed"
    assert document["message"].startswith("body.email:")
    assert "'elsewhere.org'" in document["message"]
    assert lookup.status_code == 404
    assert allowed.status_code == 202
    assert len(admission.asked) == 1
