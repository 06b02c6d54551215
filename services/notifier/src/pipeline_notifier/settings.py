"""The notifier's configuration, read once from the environment."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, ValidationError, field_validator

from pipeline_shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    SMTP_HOST: str
    SMTP_PORT: int = Field(default=587, gt=0, lt=65536)
    #: ``starttls`` upgrades a plain connection (port 587), ``tls`` is
    #: implicit TLS (port 465), ``none`` is for a local sink only.
    SMTP_SECURITY: Literal["none", "starttls", "tls"] = "starttls"
    SMTP_USERNAME: str | None = None
    SMTP_PASSWORD: str | None = None
    SMTP_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0)
    #: Tries within one execution of the email step before handing the retry
    #: to Resonate (which retries the step itself with a longer backoff).
    SMTP_MAX_ATTEMPTS: int = Field(default=5, ge=1)
    #: Idle connections kept for the next emails (0: a connection per email,
    #: closed after it). Busy ones never make a send wait: it opens its own.
    SMTP_POOL_SIZE: int = Field(default=4, ge=0)
    #: A kept connection idle longer than this is closed, not reused: well
    #: under the 5 minutes RFC 5321 lets a server wait before dropping it.
    SMTP_POOL_IDLE_SECONDS: float = Field(default=30.0, gt=0)
    #: The From address.
    MAIL_FROM: str
    #: The right-hand side of Message-IDs; defaults to MAIL_FROM's domain.
    MAIL_MESSAGE_ID_DOMAIN: str | None = None
    #: The web page's base URL as the people emailed reach it (``http://localhost:8000/ui``):
    #: an approval request links the pipeline's page under it. Unset: no link, the
    #: request says how to decide through the API and the CLI only.
    PAGE_URL: str | None = None
    #: Emails sent at once by this process.
    MAX_CONCURRENT_TASKS: int = Field(default=64, gt=0)

    @property
    def message_id_domain(self) -> str:
        return self.MAIL_MESSAGE_ID_DOMAIN or self.MAIL_FROM.rpartition("@")[2] or "localhost"

    @field_validator("PAGE_URL")
    @classmethod
    def _page_url_is_http(cls, value: str | None) -> str | None:
        """An http(s) URL with a host and nothing after its path: the base every link is made under."""
        if value is None or not value.strip():
            return None
        try:
            url = AnyHttpUrl(value)
        except ValidationError:
            url = None
        if url is None or url.query or url.fragment or any(char.isspace() for char in value):
            raise ValueError("PAGE_URL must be an http(s) URL with no query or fragment, e.g. http://localhost:8000/ui")
        return value.rstrip("/")
