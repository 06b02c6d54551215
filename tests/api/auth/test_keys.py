"""Rotating CALLBACK_SIGNING_SECRET without failing the pipelines already running.

The in-process worker derives each run's key from SECRET, as a worker that
has not been rotated yet does; the gateway is configured as after step 2 of
the procedure in pipeline_api.domain.callbacks (a new secret, SECRET listed as
previous) or after step 4 (SECRET removed).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from pipeline_api.settings import GatewaySettings
from pipeline_shared import names
from pipeline_shared.signing import derive_callback_key, sign_callback
from tests.support.gateway_app import SETTINGS, Gateway, first_callback_id, serve
from tests.support.pipeline_harness import SECRET, UNUSED_DATABASE_URL

NEW_SECRET = "rotated-secret-rotated-secret-rotated-0001"

#: Step 2: the gateway knows the new secret and still accepts the old one.
DURING = SETTINGS.model_copy(
    update={"CALLBACK_SIGNING_SECRET": NEW_SECRET, "CALLBACK_SIGNING_PREVIOUS_SECRETS": (SECRET,)}
)
#: Step 4: the old secret is removed from the list.
AFTER = SETTINGS.model_copy(update={"CALLBACK_SIGNING_SECRET": NEW_SECRET})


async def waiting_with_its_key(gateway: Gateway) -> tuple[str, str]:
    """A waiting pipeline, and the key its notebook received from the (not yet rotated) worker."""
    pipeline_id = (await gateway.start()).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    [call] = [c for c in gateway.harness.jobs.run_now_calls if c[names.JOB_PARAM_PIPELINE_ID] == pipeline_id]
    return pipeline_id, call[names.JOB_PARAM_CALLBACK_SIGNING_KEY]


async def test_a_pipeline_started_before_the_rotation_still_calls_back() -> None:
    async with serve(DURING) as gateway:
        pipeline_id, key = await waiting_with_its_key(gateway)
        assert key == derive_callback_key(SECRET, first_callback_id(pipeline_id))

        response = await gateway.callback(pipeline_id, key=key)

        assert (response.status_code, response.json()["outcome"]) == (200, "accepted"), response.text
        assert (await gateway.wait_for_state(pipeline_id, "succeeded"))["result"] == {"rows": 3}


async def test_a_key_derived_from_the_new_secret_is_accepted_during_and_after() -> None:
    for settings in (DURING, AFTER):
        async with serve(settings) as gateway:
            pipeline_id, _ = await waiting_with_its_key(gateway)
            new_key = derive_callback_key(NEW_SECRET, first_callback_id(pipeline_id))

            response = await gateway.callback(pipeline_id, key=new_key)

            assert response.status_code == 200, response.text


async def test_a_secret_removed_from_the_list_is_refused_and_changes_nothing() -> None:
    async with serve(AFTER) as gateway:
        pipeline_id, old_key = await waiting_with_its_key(gateway)
        before = (await gateway.client.get(f"/pipelines/{pipeline_id}")).json()

        response = await gateway.callback(pipeline_id, key=old_key)

        assert (response.status_code, response.json()["code"]) == (401, "invalid_signature")
        await asyncio.sleep(0.05)
        assert (await gateway.client.get(f"/pipelines/{pipeline_id}")).json() == before
        assert gateway.harness.notifications == []


@pytest.mark.parametrize("settings", [DURING, AFTER], ids=["during", "after"])
async def test_one_verifying_signature_among_several_is_enough(settings: GatewaySettings) -> None:
    # Standard Webhooks: webhook-signature is a space-separated list, so that a
    # sender can sign with an old and a new key at once.
    async with serve(settings) as gateway:
        pipeline_id, old_key = await waiting_with_its_key(gateway)
        promise_id = first_callback_id(pipeline_id)
        body = json.dumps({"promise_id": promise_id, "status": "success", "result": {}}).encode()
        by_old = sign_callback(old_key, body)
        by_new = sign_callback(derive_callback_key(NEW_SECRET, promise_id), body, msg_id=by_old["webhook-id"])
        assert by_new["webhook-timestamp"] == by_old["webhook-timestamp"]
        garbage = "v1,AAAA v2,whatever"
        signatures = f"{garbage} {by_old['webhook-signature']} {by_new['webhook-signature']}"
        headers = by_old | {"webhook-signature": signatures}

        response = await gateway.client.post("/callbacks/databricks", content=body, headers=headers)

        assert response.status_code == 200, response.text


class TestSettings:
    def test_previous_secrets_are_read_comma_separated(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CALLBACK_SIGNING_PREVIOUS_SECRETS", f" {SECRET} , {'b' * 40},")
        settings = GatewaySettings(RESONATE_DATABASE_URL=UNUSED_DATABASE_URL, CALLBACK_SIGNING_SECRET=NEW_SECRET)
        assert settings.callback_signing_secrets == (NEW_SECRET, SECRET, "b" * 40)

    def test_the_current_secret_cannot_also_be_previous(self) -> None:
        with pytest.raises(ValidationError, match="lists the current CALLBACK_SIGNING_SECRET"):
            GatewaySettings(
                RESONATE_DATABASE_URL=UNUSED_DATABASE_URL,
                CALLBACK_SIGNING_SECRET=SECRET,
                CALLBACK_SIGNING_PREVIOUS_SECRETS=(SECRET,),
            )

    @pytest.mark.parametrize("weak", ["short", "dev-only-insecure-callback-secret-change-me"])
    def test_a_weak_previous_secret_is_refused_outside_development(self, weak: str) -> None:
        with pytest.raises(ValidationError, match="CALLBACK_SIGNING_PREVIOUS_SECRETS: secret 1"):
            GatewaySettings(
                ENVIRONMENT="production",
                RESONATE_DATABASE_URL=UNUSED_DATABASE_URL,
                CALLBACK_SIGNING_SECRET=NEW_SECRET,
                CALLBACK_SIGNING_PREVIOUS_SECRETS=(weak,),
            )
