"""The sink's configuration, read once from ``MAILSINK_*`` environment variables.

Field names are the variable names, so an error names the variable to fix.
Everything has a working default: ``python -m mailsink`` with no environment
listens on SMTP 1025 and HTTP 8025 with AUTH and TLS off.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailsink.smtp import Credentials, SmtpOptions
from mailsink.store import Limits


class SinkSettings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    #: Address the SMTP listener binds; 0.0.0.0 so other containers reach it.
    MAILSINK_SMTP_HOST: str = "0.0.0.0"
    MAILSINK_SMTP_PORT: int = Field(default=1025, ge=0, le=65535)
    #: Address the HTTP API binds.
    MAILSINK_HTTP_HOST: str = "0.0.0.0"
    MAILSINK_HTTP_PORT: int = Field(default=8025, ge=0, le=65535)
    #: The name in the SMTP greeting and EHLO reply.
    MAILSINK_HOSTNAME: str = "mailsink"
    #: Messages kept before the oldest are dropped.
    MAILSINK_MAX_MESSAGES: int = Field(default=1000, ge=1)
    #: Raw bytes kept, over all messages, before the oldest are dropped.
    MAILSINK_MAX_TOTAL_BYTES: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: Largest message accepted (announced as SIZE); larger ones get 552.
    MAILSINK_MAX_MESSAGE_BYTES: int = Field(default=10 * 1024 * 1024, ge=1024)
    #: Set both to require AUTH (PLAIN or LOGIN) with these credentials.
    MAILSINK_AUTH_USERNAME: str | None = None
    MAILSINK_AUTH_PASSWORD: SecretStr | None = None
    #: PEM certificate chain and key; set both to offer TLS.
    MAILSINK_TLS_CERT_FILE: Path | None = None
    MAILSINK_TLS_KEY_FILE: Path | None = None
    #: ``starttls`` offers STARTTLS on the SMTP port; ``implicit`` speaks TLS
    #: from the first byte (SMTPS). Only used when a certificate is set.
    MAILSINK_TLS_MODE: Literal["starttls", "implicit"] = "starttls"
    MAILSINK_LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _pairs_are_complete(self) -> Self:
        if (self.MAILSINK_AUTH_USERNAME is None) != (self.MAILSINK_AUTH_PASSWORD is None):
            raise ValueError(
                "set both MAILSINK_AUTH_USERNAME and MAILSINK_AUTH_PASSWORD, or neither"
            )
        if (self.MAILSINK_TLS_CERT_FILE is None) != (self.MAILSINK_TLS_KEY_FILE is None):
            raise ValueError(
                "set both MAILSINK_TLS_CERT_FILE and MAILSINK_TLS_KEY_FILE, or neither"
            )
        return self

    def limits(self) -> Limits:
        return Limits(
            max_messages=self.MAILSINK_MAX_MESSAGES,
            max_total_bytes=self.MAILSINK_MAX_TOTAL_BYTES,
        )

    def smtp_options(self) -> SmtpOptions:
        credentials = None
        if self.MAILSINK_AUTH_USERNAME is not None and self.MAILSINK_AUTH_PASSWORD is not None:
            credentials = Credentials(
                self.MAILSINK_AUTH_USERNAME, self.MAILSINK_AUTH_PASSWORD.get_secret_value()
            )
        tls_context = None
        if self.MAILSINK_TLS_CERT_FILE is not None and self.MAILSINK_TLS_KEY_FILE is not None:
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_context.load_cert_chain(self.MAILSINK_TLS_CERT_FILE, self.MAILSINK_TLS_KEY_FILE)
        return SmtpOptions(
            hostname=self.MAILSINK_HOSTNAME,
            max_message_bytes=self.MAILSINK_MAX_MESSAGE_BYTES,
            credentials=credentials,
            tls_context=tls_context,
            implicit_tls=tls_context is not None and self.MAILSINK_TLS_MODE == "implicit",
        )
