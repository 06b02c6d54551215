"""OAuth M2M: a service principal's client id and secret in place of a personal access token.

databricks-sdk is given only ``host``, ``client_id`` and ``client_secret`` and
finds the rest itself (host metadata, then the authorization server document,
then ``POST /oidc/v1/token``), as against a workspace. The token endpoint's
answers and errors are also checked as curl sends them.
"""

from __future__ import annotations

import base64
import time

import httpx
import pytest

from tests.support.emulator_process import OAUTH_TOKEN_LIFETIME_SECONDS, SDK_REFRESHES_AFTER_SECONDS
from tests.support.emulator_runs import wait_terminated

FORM = "application/x-www-form-urlencoded"
GRANT = "grant_type=client_credentials&scope=all-apis"


def token_request(  # type: ignore[no-untyped-def]
    emulator, body: str = GRANT, *, user: tuple[str, str] | None = None, **headers: str
) -> httpx.Response:
    """``curl --request POST $HOST/oidc/v1/token [--user id:secret] --data '<body>'``."""
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return httpx.post(
        f"{emulator.url}/oidc/v1/token", content=body, headers={"Content-Type": FORM, **headers}, timeout=10
    )


def jobs_get(emulator, token: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.get(
        f"{emulator.url}/api/2.2/jobs/get",
        params={"job_id": emulator.job_id},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_sdk_runs_the_job_signed_in_as_the_service_principal(emulator, pipeline_id):
    workspace = emulator.oauth_client()
    assert workspace.config.auth_type == "oauth-m2m"

    run_id = workspace.jobs.run_now(emulator.job_id, job_parameters={"pipeline_id": pipeline_id}).run_id
    run = wait_terminated(workspace, run_id)

    assert run.run_id == run_id and run.state.result_state.value == "SUCCESS"
    assert workspace.jobs.get(emulator.job_id).settings.name == "Resonate pipeline"


def test_sdk_refreshes_its_token_before_it_expires(emulator):
    workspace = emulator.oauth_client()
    workspace.jobs.get(emulator.job_id)
    issued = emulator.oauth_counters()["tokens_issued"]
    workspace.jobs.get(emulator.job_id)
    assert emulator.oauth_counters()["tokens_issued"] == issued, "a live token is reused"

    time.sleep(SDK_REFRESHES_AFTER_SECONDS + 0.5)
    workspace.jobs.get(emulator.job_id)

    assert emulator.oauth_counters()["tokens_issued"] == issued + 1, "the SDK got a fresh token"


def test_an_expired_token_is_refused_and_a_fresh_one_works(emulator):
    token = token_request(emulator, user=(emulator.client_id, emulator.client_secret)).json()["access_token"]
    assert jobs_get(emulator, token).status_code == 200

    assert httpx.post(f"{emulator.url}/emulator/oauth/expire", headers=emulator.bearer).json()["expired"] >= 1

    refused = jobs_get(emulator, token)
    assert refused.status_code == 403
    assert refused.json() == {"error_code": 403, "message": "Invalid access token."}
    fresh = token_request(emulator, user=(emulator.client_id, emulator.client_secret)).json()["access_token"]
    assert jobs_get(emulator, fresh).status_code == 200
    assert jobs_get(emulator, emulator.token).status_code == 200, "the PAT works alongside OAuth"


def test_sdk_with_a_wrong_secret_names_the_oauth_error(emulator):
    with pytest.raises(Exception, match="invalid_client: Client authentication failed"):
        emulator.oauth_client(client_secret="dose-wrong").jobs.get(emulator.job_id)


def test_token_answer_as_curl_gets_it(emulator):
    answer = token_request(emulator, user=(emulator.client_id, emulator.client_secret))

    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert (body["token_type"], body["scope"]) == ("Bearer", "all-apis")
    assert body["expires_in"] == OAUTH_TOKEN_LIFETIME_SECONDS


def test_credentials_may_come_in_the_form_instead(emulator):
    form = f"{GRANT}&client_id={emulator.client_id}&client_secret={emulator.client_secret}"
    assert token_request(emulator, form).status_code == 200
    # Without a scope, the token is an all-apis token.
    answer = token_request(emulator, "grant_type=client_credentials", user=(emulator.client_id, emulator.client_secret))
    assert answer.json()["scope"] == "all-apis"


@pytest.mark.parametrize(
    ("body", "user", "status", "error"),
    [
        (GRANT, ("CLIENT", "dose-wrong"), 401, "invalid_client"),
        (GRANT, ("not-the-client", "SECRET"), 401, "invalid_client"),
        (GRANT, None, 401, "invalid_client"),
        (GRANT + "&client_id=CLIENT&client_secret=SECRET", ("CLIENT", "SECRET"), 400, "invalid_request"),
        ("scope=all-apis", ("CLIENT", "SECRET"), 400, "invalid_request"),
        ("grant_type=password&scope=all-apis", ("CLIENT", "SECRET"), 400, "unsupported_grant_type"),
        ("grant_type=client_credentials&scope=sql", ("CLIENT", "SECRET"), 400, "invalid_scope"),
    ],
)
def test_token_errors_have_oauths_shape(emulator, body, user, status, error):
    def real(value: str) -> str:
        return value.replace("CLIENT", emulator.client_id).replace("SECRET", emulator.client_secret)

    answer = token_request(emulator, real(body), user=user and (real(user[0]), real(user[1])))

    assert answer.status_code == status
    assert set(answer.json()) == {"error", "error_description"} and answer.json()["error"] == error
    if error == "invalid_client":
        assert answer.json()["error_description"] == "Client authentication failed"


def test_a_malformed_basic_header_is_a_failed_client_authentication(emulator):
    answer = token_request(emulator, Authorization="Basic not-base64!")
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_client")


def test_discovery_sends_the_client_to_the_host_it_used(emulator):
    # A worker in compose reaches the emulator as http://databricks:8080, not as PUBLIC_URL.
    meta = httpx.get(f"{emulator.url}/.well-known/databricks-config", headers={"Host": "databricks:8080"}).json()
    assert meta["oidc_endpoint"] == "http://databricks:8080/oidc"
    server = httpx.get(f"{emulator.url}/oidc/.well-known/oauth-authorization-server").json()
    assert server == {
        "authorization_endpoint": f"{emulator.url}/oidc/v1/authorize",
        "token_endpoint": f"{emulator.url}/oidc/v1/token",
    }


def test_user_to_machine_sign_in_is_not_modelled(emulator):
    answer = httpx.get(f"{emulator.url}/oidc/v1/authorize")
    assert answer.status_code == 501 and "U2M" in answer.json()["message"]
