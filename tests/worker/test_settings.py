"""The worker's Databricks credentials: a token or a service principal, exactly one, never printed."""

from __future__ import annotations

import pytest

from pipeline_shared.settings import load_settings
from pipeline_worker.databricks import PersonalAccessToken, ServicePrincipal
from pipeline_worker.settings import WorkerSettings

TOKEN = "dapi-0123456789abcdef-secret"
CLIENT_ID = "6f0c1a52-3b8e-4d2a-9a57-0e6b9d0c4f11"
SECRET = "dose-0123456789abcdef-secret"
#: What every worker needs besides credentials.
BASE = {
    "RESONATE_DATABASE_URL": "postgresql://pipeline_worker@resonate:5432/resonate",
    "CALLBACK_SIGNING_SECRET": "s" * 40,
    "DATABRICKS_HOST": "https://dbc-1234.cloud.databricks.com",
    "DATABRICKS_JOB_ID": "17",
    "GATEWAY_CALLBACK_URL": "https://api.example.com/callbacks/databricks",
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Set the worker's environment to BASE plus the given variables, and nothing else of Databricks."""

    def set_to(**variables: str) -> None:
        for name in ("DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
            monkeypatch.delenv(name, raising=False)
        for name, value in {**BASE, **variables}.items():
            monkeypatch.setenv(name, value)

    return set_to


def refusal(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        load_settings(WorkerSettings)
    assert stop.value.code == 2
    return capsys.readouterr().err


def test_a_token_signs_in_with_the_token(environment):
    environment(DATABRICKS_TOKEN=TOKEN)
    assert load_settings(WorkerSettings).databricks_credentials() == PersonalAccessToken(TOKEN)


def test_client_id_and_secret_sign_in_as_the_service_principal(environment):
    environment(DATABRICKS_CLIENT_ID=CLIENT_ID, DATABRICKS_CLIENT_SECRET=SECRET)
    assert load_settings(WorkerSettings).databricks_credentials() == ServicePrincipal(CLIENT_ID, SECRET)


def test_an_empty_variable_counts_as_unset(environment):
    # How compose passes a variable nobody set: DATABRICKS_TOKEN: ${DATABRICKS_TOKEN:-}
    environment(DATABRICKS_TOKEN="", DATABRICKS_CLIENT_ID=CLIENT_ID, DATABRICKS_CLIENT_SECRET=SECRET)
    assert isinstance(load_settings(WorkerSettings).databricks_credentials(), ServicePrincipal)


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({}, ["DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET", "no Databricks credentials"]),
        (
            {"DATABRICKS_TOKEN": TOKEN, "DATABRICKS_CLIENT_ID": CLIENT_ID, "DATABRICKS_CLIENT_SECRET": SECRET},
            ["either DATABRICKS_TOKEN or DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET, not both"],
        ),
        ({"DATABRICKS_TOKEN": TOKEN, "DATABRICKS_CLIENT_SECRET": SECRET}, ["not both"]),
        ({"DATABRICKS_CLIENT_ID": CLIENT_ID}, ["DATABRICKS_CLIENT_ID is set but DATABRICKS_CLIENT_SECRET is not"]),
        ({"DATABRICKS_CLIENT_SECRET": SECRET}, ["DATABRICKS_CLIENT_SECRET is set but DATABRICKS_CLIENT_ID is not"]),
    ],
)
def test_anything_but_exactly_one_way_stops_the_worker_naming_the_variables(environment, capsys, variables, named):
    environment(**variables)
    error = refusal(capsys)
    for words in named:
        assert words in error
    assert TOKEN not in error and SECRET not in error, "a refusal never quotes a secret"


def test_secrets_are_never_shown(environment):
    environment(DATABRICKS_CLIENT_ID=CLIENT_ID, DATABRICKS_CLIENT_SECRET=SECRET)
    settings = load_settings(WorkerSettings)
    credentials = settings.databricks_credentials()
    shown = " ".join([repr(settings), str(settings), repr(credentials), credentials.describe()])
    assert SECRET not in shown
    assert CLIENT_ID in credentials.describe(), "the client id is no secret; it says who signs in"
    environment(DATABRICKS_TOKEN=TOKEN)
    assert TOKEN not in repr(load_settings(WorkerSettings)) + repr(PersonalAccessToken(TOKEN))
