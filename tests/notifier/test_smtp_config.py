"""The SMTP configuration refuses what could never work, naming the field, before any email is tried."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline_notifier.smtp_config import RetryPolicy, SmtpConfig


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"port": 0}, "port"),
        ({"security": "ssl"}, "security"),
        ({"username": "only-user"}, "both"),
        ({"username": "user", "password": ""}, "both"),
        ({"timeout_seconds": 0}, "timeout"),
    ],
)
def test_impossible_configuration_is_refused(fields: dict, complaint: str) -> None:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 25} | fields
    with pytest.raises(ValueError, match=complaint):
        SmtpConfig(**values)


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [({"max_attempts": 0}, "max_attempts"), ({"backoff_base_seconds": -1}, "negative")],
)
def test_an_impossible_retry_policy_is_refused(fields: dict, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        RetryPolicy(**fields)
