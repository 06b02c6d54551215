"""The notifier's configuration, read once from the environment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
    #: The From address.
    MAIL_FROM: str
    #: The right-hand side of Message-IDs; defaults to MAIL_FROM's domain.
    MAIL_MESSAGE_ID_DOMAIN: str | None = None
    #: Emails sent at once by this process.
    MAX_CONCURRENT_TASKS: int = Field(default=64, gt=0)

    @property
    def message_id_domain(self) -> str:
        return self.MAIL_MESSAGE_ID_DOMAIN or self.MAIL_FROM.rpartition("@")[2] or "localhost"
