"""The settings every Resonate client reads: what is refused, and the message that names it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline_shared.resonate_client import conninfo
from pipeline_shared.settings import ServiceSettings, SigningSettings

DATABASE_URL = "postgresql://pipeline_worker@resonate:5432/resonate"


def settings(**values: object) -> ServiceSettings:
    return ServiceSettings(**({"RESONATE_DATABASE_URL": DATABASE_URL} | values))  # type: ignore[arg-type]


def refusal(**values: object) -> str:
    with pytest.raises(ValidationError) as caught:
        settings(**values)
    return str(caught.value)


def test_a_role_and_a_separate_password_are_accepted() -> None:
    loaded = settings(RESONATE_DATABASE_PASSWORD="s3cret-from-a-vault")
    assert loaded.RESONATE_DATABASE_PASSWORD is not None
    # A secret is never shown when the settings are printed or logged.
    assert "s3cret" not in repr(loaded)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://resonate:8001", "must be a postgresql:// URL"),
        ("postgresql://pipeline_worker:hunter2@resonate/resonate", "put it in RESONATE_DATABASE_PASSWORD"),
        ("postgresql://resonate:5432/resonate", "must name the service's database role"),
        ("postgresql://pipeline_worker@resonate/resonate?sslmod=require", "not a libpq connection URL"),
    ],
)
def test_a_database_url_that_would_not_work_is_refused_naming_the_variable(url: str, says: str) -> None:
    message = refusal(RESONATE_DATABASE_URL=url)
    assert "RESONATE_DATABASE_URL" in message
    assert says in message
    assert "hunter2" not in message


def test_the_development_database_password_is_refused_outside_development() -> None:
    development = "dev-only-insecure-worker-db-password"
    assert settings(RESONATE_DATABASE_PASSWORD=development).ENVIRONMENT == "development"
    message = refusal(RESONATE_DATABASE_PASSWORD=development, ENVIRONMENT="production")
    assert "RESONATE_DATABASE_PASSWORD is a development default" in message


def test_every_development_default_secret_is_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="CALLBACK_SIGNING_SECRET is the development default"):
        SigningSettings(
            RESONATE_DATABASE_URL=DATABASE_URL,
            ENVIRONMENT="production",
            CALLBACK_SIGNING_SECRET="dev-only-insecure-callback-secret-change-me",
        )


def test_the_connection_string_carries_the_timeouts_and_the_password() -> None:
    dsn = conninfo(DATABASE_URL, "pa ss'word", application_name="worker", keepalive_seconds=30)
    for part in (
        "connect_timeout=5",
        "keepalives_idle=30",
        "keepalives_interval=10",
        "keepalives_count=3",
        "tcp_user_timeout=60000",
        "application_name=worker",
        "statement_timeout=30000",
        # The server's own bounds on this client going silent (tests/shared/test_lost_client.py).
        "idle_in_transaction_session_timeout=30000",
        "tcp_keepalives_idle=30",
        "tcp_keepalives_interval=10",
        "tcp_keepalives_count=3",
    ):
        assert part in dsn, dsn
    assert "password='pa ss\\'word'" in dsn
