"""Who may call the gateway, and what they may see: every refusal, and that it changes nothing.

The gateway runs as in a deployment (``ENVIRONMENT=test``): API keys from a
keys file in a temporary folder, and OIDC tokens from an issuer the tests run
on loopback (tests.support.oidc_issuer). Every request goes through the fuzz
suite's StateWitness, so a refused request that changed a promise fails where
it was made.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from pipeline_api.app import create_app
from pipeline_api.auth import keys as api_keys
from pipeline_api.auth.authenticator import API_KEY_METHOD, Authenticator, oidc_method
from pipeline_api.auth.keys import DEVELOPMENT_ADMIN_API_KEY, DEVELOPMENT_API_KEY, ApiKeys, KeyEntry, key_digest, mint
from pipeline_api.auth.oidc import OidcVerifier, scopes_from
from pipeline_api.auth.principals import Principal, Scope
from pipeline_api.routing import PublicRoute, refuse_routes_without_a_scope
from pipeline_api.settings import GatewaySettings
from pipeline_shared import names
from pipeline_shared.errors import InvalidCredentials
from pipeline_shared.invocations import dispatch
from pipeline_shared.logs import JsonFormatter
from pipeline_shared.models import PipelineSpec
from tests.support.keys_files import write_keys
from tests.support.oidc_issuer import AUDIENCE, Issuer, serve_issuer
from tests.support.pipeline_harness import SECRET, UI_SECRET, UNUSED_DATABASE_URL
from tests.support.state_witness import WitnessedGateway, serve_witnessed

ALL = frozenset({Scope.START, Scope.READ, Scope.CANCEL})
ALICE_KEY, ALICE = mint("alice", ALL)
BOB_KEY, BOB = mint("bob", ALL)
READER_KEY, READER = mint("reader", frozenset({Scope.READ}))
ADMIN_KEY, ADMIN = mint("ops", frozenset({Scope.ADMIN}))
REVOKED_KEY, REVOKED = mint("alice", ALL)


def bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with serve_issuer() as issuer:
        yield issuer


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys.toml"
    write_keys(path, ALICE, BOB, READER, ADMIN, REVOKED)
    return path


def deployed_settings(keys_file: Path, issuer: Issuer, **overrides: Any) -> GatewaySettings:
    return GatewaySettings(
        **{
            "ENVIRONMENT": "test",
            "RECIPIENT_DOMAINS": "*",
            "RESONATE_DATABASE_URL": UNUSED_DATABASE_URL,
            "CALLBACK_SIGNING_SECRET": SECRET,
            "UI_SESSION_SECRET": UI_SECRET,
            "API_KEYS_FILE": keys_file,
            "OIDC_ISSUER": issuer.url,
            "OIDC_AUDIENCE": AUDIENCE,
        }
        | overrides
    )


@pytest.fixture
async def gateway(keys_file: Path, issuer: Issuer) -> AsyncIterator[WitnessedGateway]:
    """A deployed gateway; its client sends no credentials unless a request says so."""
    async with serve_witnessed(deployed_settings(keys_file, issuer), headers={}) as gateway:
        yield gateway


async def started(gateway: WitnessedGateway, credential: str = ALICE_KEY, **body: Any) -> str:
    """A pipeline started with ``credential`` and waiting for its notebook."""
    payload = {"id": f"p-{uuid.uuid4().hex[:12]}", "email": "owner@example.com"} | body
    response = await gateway.client.post("/pipelines", json=payload, headers=bearer(credential))
    assert response.status_code == 202, response.text
    pipeline_id = response.json()["id"]
    async with asyncio.timeout(10):
        while (await read(gateway, pipeline_id, credential)).json()["state"] != "waiting":
            await asyncio.sleep(0.02)
    return pipeline_id


async def read(gateway: WitnessedGateway, pipeline_id: str, credential: str) -> httpx.Response:
    return await gateway.client.get(f"/pipelines/{pipeline_id}", headers=bearer(credential))


# ── every management route and every way to be refused ────────────────────────


@dataclass(frozen=True)
class Probe:
    """One way of getting it wrong, and the answer it must get."""

    name: str
    headers: Any  # (issuer) -> headers
    code: str
    #: What the WWW-Authenticate header must hold, if anything.
    challenge: str | None = None


PROBES = [
    Probe("no-credentials", lambda _: {}, "unauthenticated", 'Bearer realm="pipelines"'),
    Probe("garbage", lambda _: bearer("not a credential at all"), "invalid_token", 'error="invalid_token"'),
    Probe("garbage-key", lambda _: bearer("pl_abc_" + "x" * 43), "invalid_token", 'error="invalid_token"'),
    Probe(
        "wrong-scheme",
        lambda _: {"authorization": "Basic " + base64.b64encode(f"{ALICE_KEY}:".encode()).decode()},
        "unauthenticated",
        'Bearer realm="pipelines"',
    ),
    Probe("expired-jwt", lambda i: bearer(i.token(exp=1_700_000_000, iat=1_699_999_000, nbf=None)), "invalid_token"),
    Probe("wrong-audience", lambda i: bearer(i.token(aud="another-service")), "invalid_token"),
    Probe("wrong-issuer", lambda i: bearer(i.token(iss="https://impostor.example")), "invalid_token"),
    Probe("alg-none", lambda i: bearer(i.unsigned_token()), "invalid_token"),
    Probe("alg-confusion", lambda i: bearer(i.hmac_with_public_key_token()), "invalid_token"),
    Probe("unknown-kid", lambda i: bearer(i.token(kid="never-published")), "invalid_token"),
    Probe("forged-signature", lambda i: bearer(i.token(kid="rsa-1", key=i.rogue)), "invalid_token"),
    Probe("revoked-key", lambda _: bearer(REVOKED_KEY), "invalid_token", 'error="invalid_token"'),
    Probe("another-principal", lambda _: bearer(BOB_KEY), "pipeline_not_found"),
]

ROUTES = ["start", "read", "cancel", "legacy-read"]


async def request_route(gateway: WitnessedGateway, route: str, pipeline_id: str, headers: dict) -> httpx.Response:
    """``route`` on alice's pipeline; a start names her pipeline's id, or a new one."""
    client = gateway.client
    if route == "start":
        return await client.post("/pipelines", json={"id": pipeline_id, "email": "owner@example.com"}, headers=headers)
    if route == "read":
        return await client.get(f"/pipelines/{pipeline_id}", headers=headers)
    if route == "cancel":
        return await client.post(f"/pipelines/{pipeline_id}/cancel", headers=headers)
    return await client.get("/run", params={"id": pipeline_id}, headers=headers)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.name)
async def test_every_route_refuses_every_probe_and_changes_nothing(
    gateway: WitnessedGateway, keys_file: Path, issuer: Issuer, route: str, probe: Probe
) -> None:
    alices = await started(gateway)
    if probe.name == "revoked-key":
        assert (await read(gateway, alices, REVOKED_KEY)).status_code == 200, "the key worked before"
        write_keys(keys_file, ALICE, BOB, READER, ADMIN)
        await asyncio.sleep(api_keys.RELOAD_CHECK_SECONDS + 0.1)
    # A refused start must not make a new pipeline either: it names a fresh id, or (another principal) alice's.
    target = alices if route != "start" or probe.name == "another-principal" else f"new-{uuid.uuid4().hex[:8]}"
    before = gateway.witness.snapshot()

    response = await request_route(gateway, route, target, probe.headers(issuer))

    expected = (409, "pipeline_conflict") if (route, probe.name) == ("start", "another-principal") else None
    status = 404 if probe.code == "pipeline_not_found" else 401
    assert (response.status_code, response.json()["code"]) == (expected or (status, probe.code)), response.text
    if probe.challenge is not None:
        assert probe.challenge in response.headers["www-authenticate"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith('Bearer realm="pipelines"')
    assert gateway.witness.last.conclusive and not gateway.witness.last.changes()
    assert gateway.witness.snapshot() == before
    assert (await read(gateway, alices, ALICE_KEY)).json()["state"] == "waiting"


@pytest.mark.parametrize(
    ("route", "scope"), [("start", "start"), ("cancel", "cancel")], ids=["start-needs-start", "cancel-needs-cancel"]
)
async def test_a_principal_without_the_scope_is_403_and_changes_nothing(
    gateway: WitnessedGateway, route: str, scope: str
) -> None:
    alices = await started(gateway)
    target = alices if route == "cancel" else "new-by-reader"

    response = await request_route(gateway, route, target, bearer(READER_KEY))

    assert (response.status_code, response.json()["code"]) == (403, "insufficient_scope")
    challenge = response.headers["www-authenticate"]
    assert challenge == f'Bearer realm="pipelines", error="insufficient_scope", scope="{scope}"'
    assert not gateway.witness.last.changes()


# ── what each principal sees ─────────────────────────────────────────────────


async def test_a_principal_reads_and_cancels_its_own_pipelines(gateway: WitnessedGateway) -> None:
    mine = await started(gateway, BOB_KEY)

    response = await gateway.client.post(f"/pipelines/{mine}/cancel", headers=bearer(BOB_KEY))

    assert response.status_code == 202, response.text
    assert (await gateway.client.get("/run", params={"id": mine}, headers=bearer(BOB_KEY))).status_code == 200


async def test_another_principals_pipeline_is_exactly_like_no_pipeline(gateway: WitnessedGateway) -> None:
    alices = await started(gateway)

    theirs = await read(gateway, alices, BOB_KEY)
    nobodys = await read(gateway, "no-such-pipeline", BOB_KEY)

    assert theirs.status_code == nobodys.status_code == 404
    assert theirs.json() == {"code": "pipeline_not_found", "message": f"no pipeline with id {alices!r}"}
    assert theirs.headers.keys() == nobodys.headers.keys()


async def test_a_reader_sees_only_its_own(gateway: WitnessedGateway) -> None:
    alices = await started(gateway)
    assert (await read(gateway, alices, READER_KEY)).status_code == 404


async def test_admin_sees_and_cancels_every_pipeline(gateway: WitnessedGateway) -> None:
    alices = await started(gateway)

    assert (await read(gateway, alices, ADMIN_KEY)).json()["state"] == "waiting"
    cancelled = await gateway.client.post(f"/pipelines/{alices}/cancel", headers=bearer(ADMIN_KEY))
    assert cancelled.status_code == 202, cancelled.text


class TestStartsOfAnIdSomeoneElseHas:
    async def test_the_owner_repeating_its_start_gets_200_and_its_pipeline(self, gateway: WitnessedGateway) -> None:
        alices = await started(gateway)
        again = await request_route(gateway, "start", alices, bearer(ALICE_KEY))
        assert (again.status_code, again.json()["id"]) == (200, alices)

    async def test_another_principal_gets_the_same_409_whether_or_not_its_request_matches(
        self, gateway: WitnessedGateway
    ) -> None:
        alices = await started(
            gateway, email="alice@example.com", parameters={"source": "/Workspace/Shared/pipelines/sauce.csv"}
        )
        identical = {
            "id": alices,
            "email": "alice@example.com",
            "parameters": {"source": "/Workspace/Shared/pipelines/sauce.csv"},
        }
        different = identical | {"parameters": {"source": "/Workspace/Shared/pipelines/other-sauce.csv"}}

        answers = [
            await gateway.client.post("/pipelines", json=body, headers=bearer(BOB_KEY))
            for body in (identical, different)
        ]

        assert [(r.status_code, r.json()) for r in answers] == [
            (409, {"code": "pipeline_conflict", "message": f"pipeline id {alices!r} is already taken; use another id"})
        ] * 2
        # Nothing of Alice's pipeline: the ids are hex, so neither word can appear in them by chance.
        assert all("alice" not in r.text and "sauce" not in r.text for r in answers)

    async def test_two_principals_racing_for_a_new_id_get_one_202_and_one_409(self, gateway: WitnessedGateway) -> None:
        body = {"id": "contested-1", "email": "race@example.com"}
        responses = await asyncio.gather(
            *(gateway.client.post("/pipelines", json=body, headers=bearer(key)) for key in (ALICE_KEY, BOB_KEY) * 5)
        )
        codes = sorted({r.status_code for r in responses})
        winners = {key for key, r in zip((ALICE_KEY, BOB_KEY) * 5, responses, strict=True) if r.status_code == 202}
        assert len(winners) == 1 and codes == [200, 202, 409], [r.text for r in responses]
        loser = BOB_KEY if winners == {ALICE_KEY} else ALICE_KEY
        assert all(
            r.status_code == 409 for key, r in zip((ALICE_KEY, BOB_KEY) * 5, responses, strict=True) if key == loser
        )

    async def test_admin_may_repeat_anyones_start(self, gateway: WitnessedGateway) -> None:
        alices = await started(gateway)
        again = await request_route(gateway, "start", alices, bearer(ADMIN_KEY))
        assert again.status_code == 200


async def test_a_pipeline_with_no_recorded_owner_is_visible_to_admins_only(gateway: WitnessedGateway) -> None:
    # Started before owners were recorded: no pipeline:owner tag.
    spec = PipelineSpec(id="legacy-1", email="old@example.com", parameters={}, timeout_seconds=600)
    await dispatch(
        gateway.harness.resonate.promises,
        spec.id,
        names.RUN_PIPELINE,
        spec.model_dump(mode="json"),
        group=names.WORKER_GROUP,
        origin=spec.id,
        timeout_at=2**62,
    )
    assert (await read(gateway, "legacy-1", ALICE_KEY)).status_code == 404
    assert (await read(gateway, "legacy-1", ADMIN_KEY)).status_code == 200
    assert (await request_route(gateway, "start", "legacy-1", bearer(ALICE_KEY))).status_code == 409


# ── OIDC tokens ──────────────────────────────────────────────────────────────


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
async def test_an_oidc_token_starts_reads_and_cancels_as_its_subject(
    gateway: WitnessedGateway, issuer: Issuer, kid: str
) -> None:
    token = issuer.token(kid=kid, sub=f"user-{kid}")
    mine = await started(gateway, token)

    assert (await gateway.client.post(f"/pipelines/{mine}/cancel", headers=bearer(token))).status_code == 202
    # Another subject of the same issuer is another principal.
    assert (await read(gateway, mine, issuer.token(kid=kid, sub="someone-else"))).status_code == 404
    # An API key whose principal has the same name is not the same principal either.
    assert (await read(gateway, mine, ALICE_KEY)).status_code == 404


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"nbf": 4_000_000_000}, "the token is not valid yet"),
        ({"exp": None}, "the token has no 'exp' claim"),
        ({"aud": None}, "the token has no 'aud' claim"),
        ({"sub": None}, "the token has no 'sub' claim"),
        ({"sub": "x" * 256}, "the token's subject (sub) is not 1-255 ASCII characters"),
    ],
    ids=["not-yet-valid", "no-exp", "no-aud", "no-sub", "long-sub"],
)
async def test_a_token_missing_what_it_must_carry_is_401_saying_what(
    gateway: WitnessedGateway, issuer: Issuer, claims: dict[str, Any], message: str
) -> None:
    response = await read(gateway, "anything", issuer.token(**claims))

    assert (response.status_code, response.json()) == (401, {"code": "invalid_token", "message": message})
    assert f'error_description="{message}"' in response.headers["www-authenticate"]


async def test_health_checks_and_metrics_need_no_credentials(gateway: WitnessedGateway) -> None:
    for path in ("/healthz", "/readyz", "/metrics/"):
        response = await gateway.client.get(path)
        assert response.status_code == 200, (path, response.text)


async def test_oidc_scopes_come_from_the_configured_claim_and_prefix(keys_file: Path, issuer: Issuer) -> None:
    settings = deployed_settings(keys_file, issuer, OIDC_SCOPES_CLAIM="scp", OIDC_SCOPE_PREFIX="pipelines:")
    async with serve_witnessed(settings, headers={}) as gateway:
        granted = issuer.token(scope=["pipelines:start", "pipelines:read", "openid"])
        unprefixed = issuer.token(scope=["start", "read"])

        ok = await gateway.client.post("/pipelines", json={"email": "a@example.com"}, headers=bearer(granted))
        refused = await gateway.client.post("/pipelines", json={"email": "a@example.com"}, headers=bearer(unprefixed))
        cancel = await gateway.client.post(f"/pipelines/{ok.json()['id']}/cancel", headers=bearer(granted))

        assert ok.status_code == 202, ok.text
        assert (refused.status_code, cancel.status_code) == (403, 403)


def test_the_approve_scope_is_granted_by_a_keys_file_entry_and_by_a_tokens_claim() -> None:
    _, entry = mint("approver", frozenset({Scope.APPROVE}))
    reread = KeyEntry.model_validate(tomllib.loads(entry.as_toml())["keys"][0])
    assert reread.principal_of().allows(Scope.APPROVE)
    assert not reread.principal_of().allows(Scope.READ)
    assert scopes_from("pipelines:approve openid", "pipelines:") == frozenset({Scope.APPROVE})


async def test_the_key_set_is_fetched_once_and_unknown_kids_cannot_make_it_fetch_again(
    gateway: WitnessedGateway, issuer: Issuer
) -> None:
    fetched = issuer.fetches("/jwks.json")
    for _ in range(5):
        assert (await read(gateway, "nothing-here", issuer.token())).status_code == 404
    for n in range(5):
        assert (await read(gateway, "nothing-here", issuer.token(kid=f"made-up-{n}"))).status_code == 401

    assert issuer.fetches("/jwks.json") - fetched == 1, issuer.requests


async def test_a_discovery_document_naming_another_issuer_is_not_trusted(keys_file: Path, issuer: Issuer) -> None:
    issuer.claimed_issuer = "https://impostor.example"
    try:
        async with serve_witnessed(deployed_settings(keys_file, issuer), headers={}) as gateway:
            response = await read(gateway, "x", issuer.token())
    finally:
        issuer.claimed_issuer = None
    assert (response.status_code, response.json()["code"]) == (503, "authentication_unavailable")


async def test_an_unreachable_key_set_is_503_and_keys_still_work(keys_file: Path, issuer: Issuer) -> None:
    settings = deployed_settings(keys_file, issuer, OIDC_JWKS_URL="http://127.0.0.1:9/jwks.json")
    async with serve_witnessed(settings, headers={}) as gateway:
        token = await read(gateway, "x", issuer.token())
        key = await read(gateway, "x", ALICE_KEY)
    assert (token.status_code, token.json()["code"]) == (503, "authentication_unavailable")
    assert key.status_code == 404


# ── API keys over time ───────────────────────────────────────────────────────


class TestTheKeysFile:
    def test_a_key_added_is_accepted_within_a_second_without_a_stat_per_request(
        self, keys_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        now = [1000.0]
        ring = ApiKeys.from_file(keys_file, "test", clock=lambda: now[0])
        new_key, new_entry = mint("carol", ALL)
        stats = []
        real_stat = os.stat
        monkeypatch.setattr(api_keys.os, "stat", lambda path: stats.append(path) or real_stat(path))
        write_keys(keys_file, ALICE, new_entry)

        assert [ring.principal_for(new_key) for _ in range(50)] == [None] * 50
        assert stats == [], "looked at the file before a second had passed"
        now[0] += 1.0
        assert ring.principal_for(new_key).name == "carol"  # type: ignore[union-attr]
        assert ring.principal_for(BOB_KEY) is None, "bob's entry was removed"
        assert len(stats) == 1

    def test_an_invalid_file_refuses_every_key_until_it_is_fixed(
        self, keys_file: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        from pipeline_shared.errors import AuthenticationUnavailable

        now = [0.0]
        ring = ApiKeys.from_file(keys_file, "test", clock=lambda: now[0])
        keys_file.write_text('[[keys]]\nid = "x"\nhash = "' + ALICE_KEY + '"\n')
        now[0] += 5
        with pytest.raises(AuthenticationUnavailable):
            ring.principal_for(ALICE_KEY)
        assert ALICE_KEY not in caplog.text, "the log quoted what was in the hash field"
        write_keys(keys_file, ALICE)
        now[0] += 5
        assert ring.principal_for(ALICE_KEY).name == "alice"  # type: ignore[union-attr]

    @pytest.mark.parametrize("key", [DEVELOPMENT_API_KEY, DEVELOPMENT_ADMIN_API_KEY])
    def test_a_file_listing_a_development_key_is_refused_outside_development(self, tmp_path: Path, key: str) -> None:
        path = tmp_path / "keys.toml"
        write_keys(path, KeyEntry(id="dev", hash=api_keys.key_digest(key), principal="x", scopes=ALL))
        with pytest.raises(ValidationError, match=r"API_KEYS_FILE: .*lists a development API key"):
            GatewaySettings(
                ENVIRONMENT="production",
                RESONATE_DATABASE_URL=UNUSED_DATABASE_URL,
                CALLBACK_SIGNING_SECRET=SECRET,
                API_KEYS_FILE=path,
            )

    def test_a_missing_keys_file_stops_the_gateway_naming_the_variable(self, tmp_path: Path) -> None:
        with pytest.raises(ValidationError, match=r"API_KEYS_FILE: .*cannot be read"):
            GatewaySettings(
                RESONATE_DATABASE_URL=UNUSED_DATABASE_URL,
                CALLBACK_SIGNING_SECRET=SECRET,
                API_KEYS_FILE=tmp_path / "none",
            )

    def test_mint_prints_a_key_and_the_entry_that_accepts_it(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert api_keys.main(["mint", "--principal", "billing-service", "--scopes", "start,read"]) == 0
        printed = capsys.readouterr().out
        key = next(line for line in printed.splitlines() if line.startswith("pl_"))
        path = tmp_path / "keys.toml"
        path.write_text(printed[printed.index("[[keys]]") :])
        principal = ApiKeys.from_file(path, "production").principal_for(key)
        assert principal is not None and principal.id == "key:billing-service"
        assert principal.scopes == {Scope.START, Scope.READ}
        assert key not in path.read_text().split("[[keys]]")[1], "the entry holds the key itself"


# ── development ──────────────────────────────────────────────────────────────


class TestTheDevelopmentKeys:
    @pytest.mark.parametrize(
        ("key", "principal_id", "scopes"),
        [
            (DEVELOPMENT_API_KEY, "key:dev", ALL | {Scope.APPROVE}),
            (DEVELOPMENT_ADMIN_API_KEY, "key:dev-admin", {Scope.ADMIN}),
        ],
    )
    async def test_accepted_in_development_without_a_keys_file(
        self, key: str, principal_id: str, scopes: set[Scope]
    ) -> None:
        settings = GatewaySettings(RESONATE_DATABASE_URL=UNUSED_DATABASE_URL, CALLBACK_SIGNING_SECRET=SECRET)
        principal = await Authenticator.from_settings(settings).principal_for(key)
        assert (principal.id, principal.scopes) == (principal_id, scopes)

    @pytest.mark.parametrize("key", [DEVELOPMENT_API_KEY, DEVELOPMENT_ADMIN_API_KEY])
    @pytest.mark.parametrize("environment", ["test", "production"])
    async def test_refused_in_any_other_environment(self, issuer: Issuer, environment: str, key: str) -> None:
        from pipeline_shared.errors import InvalidCredentials

        settings = GatewaySettings(
            ENVIRONMENT=environment,
            RECIPIENT_DOMAINS="*",
            RESONATE_DATABASE_URL=UNUSED_DATABASE_URL,
            CALLBACK_SIGNING_SECRET=SECRET,
            UI_SESSION_SECRET=UI_SECRET,
            OIDC_ISSUER=issuer.url,
            OIDC_AUDIENCE=AUDIENCE,
        )
        with pytest.raises(InvalidCredentials):
            await Authenticator.from_settings(settings).principal_for(key)

    @pytest.mark.parametrize("key", [DEVELOPMENT_API_KEY, DEVELOPMENT_ADMIN_API_KEY])
    async def test_refused_in_development_when_there_is_a_keys_file(self, keys_file: Path, key: str) -> None:
        from pipeline_shared.errors import InvalidCredentials

        settings = GatewaySettings(
            RESONATE_DATABASE_URL=UNUSED_DATABASE_URL, CALLBACK_SIGNING_SECRET=SECRET, API_KEYS_FILE=keys_file
        )
        with pytest.raises(InvalidCredentials):
            await Authenticator.from_settings(settings).principal_for(key)

    def test_outside_development_the_gateway_will_not_start_without_a_way_in(self) -> None:
        with pytest.raises(ValidationError, match="set API_KEYS_FILE"):
            GatewaySettings(
                ENVIRONMENT="production", RESONATE_DATABASE_URL=UNUSED_DATABASE_URL, CALLBACK_SIGNING_SECRET=SECRET
            )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"OIDC_ISSUER": "https://idp.example"}, "OIDC_AUDIENCE is required"),
        ({"OIDC_AUDIENCE": "x"}, "OIDC_AUDIENCE set without OIDC_ISSUER"),
        ({"OIDC_ISSUER": "https://idp", "OIDC_AUDIENCE": "x", "OIDC_ALGORITHMS": "RS256,HS256"}, "HS256"),
        ({"OIDC_ISSUER": "https://idp", "OIDC_AUDIENCE": "x", "OIDC_ALGORITHMS": "none"}, "OIDC_ALGORITHMS: none"),
        ({"CALLBACK_PORT": 8000}, "CALLBACK_PORT must differ from PORT"),
    ],
)
def test_auth_settings_that_cannot_work_stop_the_gateway(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any], message: str
) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(name, str(value))
    with pytest.raises(ValidationError, match=message):
        GatewaySettings(RESONATE_DATABASE_URL=UNUSED_DATABASE_URL, CALLBACK_SIGNING_SECRET=SECRET)


def test_empty_auth_settings_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CALLBACK_PORT", "API_KEYS_FILE", "OIDC_ISSUER", "OIDC_AUDIENCE", "OIDC_JWKS_URL"):
        monkeypatch.setenv(name, "")
    settings = GatewaySettings(RESONATE_DATABASE_URL=UNUSED_DATABASE_URL, CALLBACK_SIGNING_SECRET=SECRET)
    assert (settings.CALLBACK_PORT, settings.API_KEYS_FILE, settings.OIDC_ISSUER) == (None, None, None)
    assert settings.accepts_development_key


# ── the default that a new route cannot forget ───────────────────────────────


def test_only_the_health_checks_and_databricks_own_calls_are_public(keys_file: Path, issuer: Issuer) -> None:
    # The callback is signed, the notification carries basic auth: neither takes the clients' credentials.
    app = create_app(deployed_settings(keys_file, issuer))
    public = {(method, r.path) for r in app.routes if isinstance(r, PublicRoute) for method in r.methods}
    assert public == {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("POST", "/callbacks/databricks"),
        ("POST", "/notifications/databricks"),
    }
    document = app.openapi()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            secured = operation.get("security") == [{"HTTPBearer": []}]
            assert secured == ((method.upper(), path) not in public), (method, path, operation.get("security"))


async def test_a_route_added_later_authenticates_by_default_and_must_name_a_scope(
    keys_file: Path, issuer: Issuer
) -> None:
    app = create_app(deployed_settings(keys_file, issuer))

    @app.get("/added-later")
    async def added_later() -> dict[str, str]:
        return {"reached": "yes"}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as client:
        anonymous = await client.get("/added-later")
        authenticated = await client.get("/added-later", headers=bearer(ALICE_KEY))
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "unauthenticated")
    assert authenticated.status_code == 200
    with pytest.raises(RuntimeError, match="/added-later needs no scope"):
        refuse_routes_without_a_scope(app)


async def test_credentials_are_checked_once_per_request(
    gateway: WitnessedGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    alices = await started(gateway)
    authenticator: Authenticator = gateway.witness.app.state.authenticator
    calls = []
    check = authenticator.principal_for

    async def counted(credential: str) -> Any:
        calls.append(1)
        return await check(credential)

    monkeypatch.setattr(authenticator, "principal_for", counted)
    await read(gateway, alices, ALICE_KEY)
    await gateway.client.post(f"/pipelines/{alices}/cancel", headers=bearer(ALICE_KEY))
    await request_route(gateway, "start", "another", bearer(ALICE_KEY))
    assert len(calls) == 3


async def test_a_strangers_start_body_is_never_parsed(gateway: WitnessedGateway) -> None:
    response = await gateway.client.post(
        "/pipelines", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()["code"]) == (401, "unauthenticated")


# ── the audit trail, and what never reaches it ───────────────────────────────


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("api"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Formatted as it is logged: the pipeline id is the context's at that moment.
        self.lines.append(self.format(record))


@contextlib.contextmanager
def captured_lines() -> Iterator[list[str]]:
    """Every log line of the block, at every level, as the gateway writes it (JSON, fields merged)."""
    handler, root = _Lines(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_who_started_cancelled_or_was_refused_what_is_one_line_each(gateway: WitnessedGateway) -> None:
    with captured_lines() as lines:
        alices = await started(gateway)
        await gateway.client.post(f"/pipelines/{alices}/cancel", headers=bearer(ALICE_KEY))
        await read(gateway, alices, BOB_KEY)
        await read(gateway, alices, "pl_nope_" + "y" * 40)
        await gateway.client.post(f"/pipelines/{alices}/cancel", headers=bearer(READER_KEY))
    records = [json.loads(line) for line in lines]
    audit_messages = {"pipeline started", "pipeline start repeated", "pipeline cancelled", "request refused"}
    audit = [(r["msg"], r.get("principal"), r.get("code")) for r in records if r["msg"] in audit_messages]

    assert audit == [
        ("pipeline started", "key:alice", None),
        ("pipeline cancelled", "key:alice", None),
        ("request refused", "key:bob", "pipeline_not_found"),
        ("request refused", None, "invalid_token"),
        ("request refused", "key:reader", "insufficient_scope"),
    ]
    started_line = next(r for r in records if r["msg"] == "pipeline started")
    assert (started_line["pipeline_id"], started_line["key_id"]) == (alices, ALICE.id)


async def test_no_secret_reaches_a_log_line_an_error_body_or_a_header(keys_file: Path, issuer: Issuer) -> None:
    new_secret = "rotated-secret-rotated-secret-rotated-0002"
    settings = deployed_settings(
        keys_file, issuer, CALLBACK_SIGNING_SECRET=new_secret, CALLBACK_SIGNING_PREVIOUS_SECRETS=SECRET
    )
    tokens = [issuer.token(), issuer.token(kid="ec-1", sub="dave")]
    hostile_tokens = [probe.headers(issuer).get("authorization", "") for probe in PROBES]
    answers: list[httpx.Response] = []
    with captured_lines() as lines:
        async with serve_witnessed(settings, headers={}) as gateway:
            pipelines = [await started(gateway, ALICE_KEY), await started(gateway, tokens[0])]
            for credential in (ALICE_KEY, BOB_KEY, READER_KEY, ADMIN_KEY, REVOKED_KEY, DEVELOPMENT_API_KEY, *tokens):
                for route in ROUTES:
                    answers.append(await request_route(gateway, route, pipelines[0], bearer(credential)))
            for header in hostile_tokens:
                for route in ROUTES:
                    answers.append(await request_route(gateway, route, pipelines[1], {"authorization": header}))
            for pipeline_id in pipelines:
                for key in (derive_key(SECRET, pipeline_id), derive_key(new_secret, "other"), "whsec_" + "A" * 44):
                    answers.append(await gateway.callback(pipeline_id, key=key))
    secrets = [
        ALICE_KEY, BOB_KEY, READER_KEY, ADMIN_KEY, REVOKED_KEY, DEVELOPMENT_API_KEY, SECRET, new_secret, *tokens,
        *(header.split(" ", 1)[-1] for header in hostile_tokens),
        *(derive_key(secret, p) for secret in (SECRET, new_secret) for p in pipelines),
    ]  # fmt: skip
    secrets += [secret.split("_", 2)[-1] for secret in secrets if secret.startswith("pl_")]  # the secret part alone
    secrets += [token.rsplit(".", 1)[-1] for token in tokens]  # a signature alone
    exposed = lines + [r.text for r in answers] + [str(dict(r.headers)) for r in answers]
    exposed += [bytes(o.body).decode(errors="replace") for o in gateway.witness.observations]
    assert len(lines) > 50 and any(r.status_code == 401 for r in answers)
    for secret in filter(None, secrets):
        leaks = [text[:200] for text in exposed if secret in text]
        assert not leaks, f"a secret ({secret[:6]}...) appears in: {leaks[:3]}"


def derive_key(secret: str, pipeline_id: str) -> str:
    from pipeline_shared import promise_tree
    from pipeline_shared.signing import derive_callback_key

    return derive_callback_key(secret, promise_tree.callback_promise_id(pipeline_id))


# ── sessions: how they were signed in ────────────────────────────────────────


def test_a_session_stands_only_while_the_way_it_signed_in_is_configured(keys_file: Path) -> None:
    keys = ApiKeys.from_file(keys_file, "test")
    subject = Principal("oidc", "mallory", frozenset({Scope.ADMIN}))
    alice = keys.principal_for(ALICE_KEY)
    assert alice is not None
    with_oidc = Authenticator(keys, OidcVerifier("https://idp.example", AUDIENCE))
    keys_only = Authenticator(keys, None)
    oidc_only = Authenticator(None, OidcVerifier("https://idp.example", AUDIENCE))
    from_idp = oidc_method("https://idp.example")

    assert with_oidc.still_signed_in(subject, None, from_idp) == subject
    assert keys_only.still_signed_in(alice, key_digest(ALICE_KEY), API_KEY_METHOD) == alice
    refusals = {
        "OIDC switched off": (keys_only, subject, None, from_idp),
        "another issuer": (
            Authenticator(keys, OidcVerifier("https://other.example", AUDIENCE)),
            subject,
            None,
            from_idp,
        ),
        "API keys switched off": (oidc_only, alice, key_digest(ALICE_KEY), API_KEY_METHOD),
        "an OIDC subject claiming a key's method": (with_oidc, subject, None, API_KEY_METHOD),
        "a key's principal claiming OIDC": (with_oidc, alice, key_digest(ALICE_KEY), from_idp),
        "no method": (with_oidc, subject, None, ""),
        "a key not the one signed in with": (with_oidc, alice, key_digest(BOB_KEY), API_KEY_METHOD),
    }
    for what, (authenticator, principal, digest, method) in refusals.items():
        with pytest.raises(InvalidCredentials) as refused:
            authenticator.still_signed_in(principal, digest, method)
        assert refused.value.message, what
