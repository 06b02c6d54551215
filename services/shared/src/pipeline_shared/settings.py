"""Configuration every service reads the same way.

Each service has one ``Settings`` class built on :class:`ServiceSettings`:
environment variables with UPPER_CASE names, read once at start. A missing or
invalid variable stops the service with a message naming it, rather than
failing later in a request. Secrets have no usable default in code; the
development value compose supplies is refused outside development.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, Self

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .catalogue import Catalogue, CatalogueError

#: Every development default secret compose supplies starts with this, so
#: `docker compose up` works on a laptop with no .env and each such value is
#: recognised, and refused, anywhere it would matter.
DEVELOPMENT_SECRET_PREFIX = "dev-only-insecure-"

#: The signing secret compose uses when none is given.
DEVELOPMENT_SIGNING_SECRET = f"{DEVELOPMENT_SECRET_PREFIX}callback-secret-change-me"

#: Below this a secret is guessable enough to forge callbacks offline.
MIN_SECRET_LENGTH = 32


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    #: ``development`` allows the development secret; anything else refuses it.
    ENVIRONMENT: Literal["development", "test", "production"] = "development"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: The Resonate server's database (resonate-pg) as a libpq URL naming
    #: this service's own role, e.g. postgresql://pipeline_worker@resonate:5432/resonate.
    #: The password goes in RESONATE_DATABASE_PASSWORD, never here.
    RESONATE_DATABASE_URL: str
    #: The role's password.
    RESONATE_DATABASE_PASSWORD: SecretStr | None = None
    #: A database connection silent this long is probed (TCP keepalive); a
    #: server that vanished without closing it is noticed within twice this,
    #: and the connection replaced.
    RESONATE_KEEPALIVE_SECONDS: float = Field(default=30.0, ge=1, le=3600)
    #: Port of the ops endpoints (/healthz, /readyz, /metrics) in services
    #: that serve nothing else over HTTP.
    OPS_PORT: int = 9000
    #: How long a task this process holds stays its own without a heartbeat.
    #: After a crash, its work moves to another process this much later.
    TASK_LEASE_SECONDS: float = Field(default=60.0, ge=2)
    #: Fault tests only: pause points a test can kill the process at (see
    #: pipeline_shared.testhooks). Refused outside development.
    WORKER_TEST_HOOKS: bool = False

    @field_validator("RESONATE_DATABASE_URL")
    @classmethod
    def _a_postgres_url_without_password(cls, url: str) -> str:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (the resonate-pg database)")
        try:
            parts = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"not a libpq connection URL: {exc}") from None
        if "password" in parts:
            raise ValueError("must not hold a password; put it in RESONATE_DATABASE_PASSWORD")
        if "user" not in parts:
            raise ValueError("must name the service's database role, e.g. postgresql://pipeline_api@host/resonate")
        return url

    @model_validator(mode="after")
    def _no_development_database_password_outside_development(self) -> Self:
        password = self.RESONATE_DATABASE_PASSWORD
        if (
            self.ENVIRONMENT != "development"
            and password is not None
            and password.get_secret_value().startswith(DEVELOPMENT_SECRET_PREFIX)
        ):
            raise ValueError(
                "RESONATE_DATABASE_PASSWORD is a development default; "
                f"set the role's real password for ENVIRONMENT={self.ENVIRONMENT}"
            )
        return self

    @model_validator(mode="after")
    def _no_test_hooks_outside_development(self) -> Self:
        if self.WORKER_TEST_HOOKS and self.ENVIRONMENT != "development":
            raise ValueError(f"WORKER_TEST_HOOKS is for tests; it cannot be on in ENVIRONMENT={self.ENVIRONMENT}")
        return self


class SigningSettings(ServiceSettings):
    """Settings of a service that derives callback signing keys."""

    #: Server-side secret from which each callback promise's key is derived.
    CALLBACK_SIGNING_SECRET: str

    @model_validator(mode="after")
    def _refuse_weak_secret_outside_development(self) -> Self:
        if self.ENVIRONMENT == "development":
            return self
        if self.CALLBACK_SIGNING_SECRET.startswith(DEVELOPMENT_SECRET_PREFIX):
            raise ValueError(
                "CALLBACK_SIGNING_SECRET is the development default; "
                f"set a random secret for ENVIRONMENT={self.ENVIRONMENT}"
            )
        if len(self.CALLBACK_SIGNING_SECRET) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"CALLBACK_SIGNING_SECRET must be at least {MIN_SECRET_LENGTH} characters "
                f"for ENVIRONMENT={self.ENVIRONMENT}"
            )
        return self


class CatalogueSettings(SigningSettings):
    """Settings of a service that reads the job catalogue (the gateway and the worker)."""

    #: The job catalogue (TOML; see pipeline_shared.catalogue). The default,
    #: relative to the working directory, is the repository's, which the
    #: services' images carry at the same place (/app/infra/catalogue.toml).
    JOB_CATALOGUE_FILE: Path = Path("infra/catalogue.toml")

    _catalogue: Catalogue | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _catalogue_loads(self) -> Self:
        try:
            self._catalogue = Catalogue.load(self.JOB_CATALOGUE_FILE)
        except CatalogueError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def catalogue(self) -> Catalogue:
        assert self._catalogue is not None  # loaded by the validator
        return self._catalogue


def load_settings[S: BaseSettings](cls: type[S]) -> S:
    """Read ``cls`` from the environment, or exit naming every bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        lines = [f"{cls.__module__}.{cls.__name__}: invalid configuration"]
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            lines.append(f"  {name}: {error['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
