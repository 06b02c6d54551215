"""Configuration, read once from the environment under the real server's names.

The real server reads ``RESONATE_*`` variables with ``__`` for nesting
(``RESONATE_SERVER__PORT`` is ``server.port``; resonatehq/resonate
``src/config.rs``). The stand-in uses the same names for every setting it
shares with the server, so a compose file can switch between the two by
changing the image alone. Settings the stand-in has no use for (storage,
metrics, push transports) are ignored, and the storage ones are reported at
start, since an in-memory server silently ignoring a database URL would be a
trap. Its own few settings live under ``RESONATE_DEV__``.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from resonate_dev.delivery import DEFAULT_BUFFER_SIZE, DEFAULT_MAX_CONNECTIONS
from resonate_dev.model import DEFAULT_RETRY_TIMEOUT_MS

#: Timeout sweep interval in ms. The real server sweeps every 1000 ms (and
#: newer versions add an in-memory timer); a tick this short keeps a promise's
#: or lease's timeout within a few tens of ms of its deadline, and with the
#: heap-ordered deadlines an idle tick costs microseconds.
DEFAULT_TICK_MS = 25


class ServerSettings(BaseModel):
    #: Host name used in the default ``server.url``.
    host: str = "localhost"
    port: int = Field(default=8001, ge=1, le=65535)
    bind: str = "0.0.0.0"
    #: The URL stamped into ``execute`` messages as ``head.serverUrl``.
    url: str | None = None


class AuthSettings(BaseModel):
    #: Path to a PEM public key, or ``none`` for unsigned tokens.
    publickey: str
    iss: str | None = None
    aud: str | None = None


class TasksSettings(BaseModel):
    retry_timeout: int = Field(default=DEFAULT_RETRY_TIMEOUT_MS, ge=1)


class TimeoutsSettings(BaseModel):
    poll_interval: int = Field(default=DEFAULT_TICK_MS, ge=1)


class HttpPollSettings(BaseModel):
    max_connections: int = Field(default=DEFAULT_MAX_CONNECTIONS, ge=1)
    buffer_size: int = Field(default=DEFAULT_BUFFER_SIZE, ge=1)


class TransportsSettings(BaseModel):
    http_poll: HttpPollSettings = Field(default_factory=HttpPollSettings)


class DevSettings(BaseModel):
    #: Append every response envelope and SSE message sent to this JSONL file.
    wire_log: str | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RESONATE_",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",
    )

    #: Log level, in the server's words: debug, info, warn or error.
    level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings | None = None
    tasks: TasksSettings = Field(default_factory=TasksSettings)
    timeouts: TimeoutsSettings = Field(default_factory=TimeoutsSettings)
    transports: TransportsSettings = Field(default_factory=TransportsSettings)
    dev: DevSettings = Field(default_factory=DevSettings)

    @field_validator("level", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def logging_level(self) -> str:
        """The level's name for :mod:`logging` (which says WARNING for warn)."""
        return "WARNING" if self.level == "warn" else self.level.upper()

    @property
    def server_url(self) -> str:
        return self.server.url or f"http://{self.server.host}:{self.server.port}"


def ignored_storage_settings(environ: dict[str, str] | None = None) -> list[str]:
    """The ``RESONATE_STORAGE__*`` variables set, which the stand-in cannot honour."""
    env = os.environ if environ is None else environ
    return sorted(name for name in env if name.upper().startswith("RESONATE_STORAGE__"))
