"""The notifier's settings, checked at start: the page URL emails link under, the SMTP pool's bounds."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pipeline_notifier.settings import NotifierSettings


def settings(**fields: Any) -> NotifierSettings:
    required = {
        "RESONATE_DATABASE_URL": "postgresql://notifier@resonate/resonate",
        "SMTP_HOST": "mail",
        "MAIL_FROM": "p@example.com",
    }
    return NotifierSettings(**(required | fields))  # type: ignore[arg-type]


def test_without_a_page_url_there_is_none() -> None:
    assert settings().PAGE_URL is None
    assert settings(PAGE_URL="").PAGE_URL is None


@pytest.mark.parametrize("url", ["http://localhost:8000/ui", "https://pipelines.example.com/ui/"])
def test_an_http_page_url_is_kept_without_its_trailing_slash(url: str) -> None:
    assert url.rstrip("/") == settings(PAGE_URL=url).PAGE_URL


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "ftp://example.com/ui",
        "localhost:8000/ui",
        "http://example.com/ui?approve=yes",
        "http://example.com/ui#x",
        "http://example.com/u i",
        "http://example.com/ui\r\nBcc: x@example.com",
    ],
)
def test_a_page_url_that_is_no_http_base_is_refused_naming_the_setting(url: str) -> None:
    with pytest.raises(ValidationError, match="PAGE_URL"):
        settings(PAGE_URL=url)


def test_smtp_connections_are_kept_by_default_and_0_keeps_none() -> None:
    assert (settings().SMTP_POOL_SIZE, settings().SMTP_POOL_IDLE_SECONDS) == (4, 30.0)
    assert settings(SMTP_POOL_SIZE=0).SMTP_POOL_SIZE == 0


@pytest.mark.parametrize(
    ("field", "value"), [("SMTP_POOL_SIZE", -1), ("SMTP_POOL_SIZE", "many"), ("SMTP_POOL_IDLE_SECONDS", 0)]
)
def test_an_impossible_pool_setting_is_refused_naming_it(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        settings(**{field: value})
