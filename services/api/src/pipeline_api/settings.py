"""The gateway's configuration, read once from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from pipeline_shared.settings import (
    DEVELOPMENT_SECRET_PREFIX,
    DEVELOPMENT_SIGNING_SECRET,
    MIN_SECRET_LENGTH,
    CatalogueSettings,
)

from .auth.keys import InvalidKeysFile, load_keys_file
from .auth.oidc import ASYMMETRIC_ALGORITHMS
from .domain.limits import InvalidLimit, RecipientDomains, StartLimits

#: Signs the web page's session cookies on the development stack. Public on
#: purpose, like the development signing secret, and refused elsewhere.
DEVELOPMENT_UI_SESSION_SECRET = f"{DEVELOPMENT_SECRET_PREFIX}ui-session-secret-change-me"


def _comma_separated(value: Any) -> Any:
    """``"a, b"`` -> ``("a", "b")``: a list in one environment variable, blanks ignored."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class GatewaySettings(CatalogueSettings):
    PORT: int = 8000
    #: Time the workflow has after the wait to cancel the run and send the
    #: email, before Resonate times the whole pipeline out.
    PIPELINE_FINISH_GRACE_SECONDS: int = Field(default=24 * 3600, ge=60)
    #: Largest callback body accepted; larger ones get 413.
    CALLBACK_MAX_BODY_BYTES: int = Field(default=1024 * 1024, ge=1024)
    #: Signing secrets replaced by CALLBACK_SIGNING_SECRET, comma-separated:
    #: callbacks signed with a key derived from one of them are still
    #: accepted, so pipelines started before a rotation can finish. See
    #: pipeline_api.domain.callbacks for the rotation procedure.
    CALLBACK_SIGNING_PREVIOUS_SECRETS: Annotated[tuple[str, ...], NoDecode] = ()

    #: When set, the gateway also listens on this port, and serves there the
    #: callback route alone (everything else is a 404): the one listener a
    #: deployment exposes to the Databricks workspace.
    CALLBACK_PORT: int | None = Field(default=None, ge=1, le=65535)

    # ── Databricks' job notifications (see pipeline_api.domain.notifications) ──
    #: The basic-auth credentials the workspace's webhook notification
    #: destination sends. Without a password the notification route is off (404).
    DATABRICKS_NOTIFICATION_USERNAME: str = Field(default="databricks", min_length=1)
    DATABRICKS_NOTIFICATION_PASSWORD: SecretStr | None = None
    #: At most one check of a pipeline's run per notification event within
    #: this many seconds, however many notifications arrive.
    NOTIFICATION_CHECK_WINDOW_SECONDS: int = Field(default=10, ge=1, le=3600)

    # ── client authentication (see pipeline_api.deps) ───────────────────
    #: The API keys file (TOML; see pipeline_api.auth.keys). Re-read when it changes.
    API_KEYS_FILE: Path | None = None
    #: The OIDC issuer whose access tokens are accepted, exactly as tokens name it in ``iss``.
    OIDC_ISSUER: str | None = None
    #: The ``aud`` a token must carry: this gateway's identifier at the issuer.
    OIDC_AUDIENCE: str | None = None
    #: The issuer's key set; default: found through OIDC discovery.
    OIDC_JWKS_URL: str | None = None
    #: Signature algorithms accepted, comma-separated; asymmetric ones only.
    OIDC_ALGORITHMS: Annotated[tuple[str, ...], NoDecode] = ("RS256", "ES256")
    #: The claim holding the token's scopes: ``scope`` (a space-separated
    #: string) or e.g. ``scp`` (a string or a list).
    OIDC_SCOPES_CLAIM: str = "scope"
    #: What the issuer puts before the gateway's scope names, e.g.
    #: ``pipelines:`` when tokens carry ``pipelines:start``.
    OIDC_SCOPE_PREFIX: str = ""

    # ── start limits (see pipeline_api.domain.limits) ──────────────────────────
    #: Pipelines one principal may start in any minute; 0: no limit. A repeat
    #: of a start (same id) is not counted again.
    START_RATE_PER_MINUTE: int = Field(default=60, ge=0)
    #: Pipelines of one principal that may be waiting (not yet final) at once; 0: no limit.
    PIPELINES_WAITING_PER_PRINCIPAL: int = Field(default=100, ge=0)
    #: Other limits for named principals, comma-separated ``principal=RATE/WAITING``
    #: with the principal as pipelines record their owner (e.g. ``key:svc-reports=600/1000``; 0 is no limit).
    PRINCIPAL_START_LIMITS: Annotated[tuple[str, ...], NoDecode] = ()
    #: The domains pipelines may email, comma-separated: ``example.com`` allows
    #: that domain, ``.example.com`` its subdomains, ``*`` any. Required outside
    #: development (no open mail relay by default); empty in development: any.
    RECIPIENT_DOMAINS: Annotated[tuple[str, ...], NoDecode] = ()

    # ── what one connection may cost (see pipeline_api.connections) ──────
    #: On the gateway's listener (PORT): largest request line and headers, in bytes; larger is 431.
    HTTP_MAX_HEADER_BYTES: int = Field(default=16 * 1024, ge=1024)
    #: Most header lines a request may have; more is 431.
    HTTP_MAX_HEADERS: int = Field(default=100, ge=8)
    #: Seconds a client has to send a request's headers; slower is 408.
    HTTP_HEADER_TIMEOUT_SECONDS: float = Field(default=10, gt=0)
    #: Seconds a client has to send a request's body once its headers are in; slower is 408.
    HTTP_BODY_TIMEOUT_SECONDS: float = Field(default=30, gt=0)
    #: Connections open at once; one more is answered 503 with Retry-After and closed.
    HTTP_MAX_CONNECTIONS: int = Field(default=1000, ge=1)
    #: Seconds an idle connection is kept open between requests. Longer than a client's pool or a
    #: proxy keeps one (httpx 5 s, nginx and AWS's load balancers 60 s): a request sent on a
    #: connection the server is closing at that moment is lost unanswered.
    HTTP_KEEP_ALIVE_SECONDS: float = Field(default=75, gt=0)
    #: The same, for the callback listener (CALLBACK_PORT): as tight as a callback allows.
    CALLBACK_MAX_HEADER_BYTES: int = Field(default=8 * 1024, ge=1024)
    CALLBACK_MAX_HEADERS: int = Field(default=32, ge=8)
    CALLBACK_HEADER_TIMEOUT_SECONDS: float = Field(default=5, gt=0)
    CALLBACK_BODY_TIMEOUT_SECONDS: float = Field(default=10, gt=0)
    CALLBACK_MAX_CONNECTIONS: int = Field(default=200, ge=1)
    CALLBACK_KEEP_ALIVE_SECONDS: float = Field(default=75, gt=0)

    # ── the web page (see pipeline_api.ui) ──────────────────────────────
    #: Signs the page's session cookies (at least 32 characters). Changing it
    #: signs everybody out.
    UI_SESSION_SECRET: SecretStr = SecretStr(DEVELOPMENT_UI_SESSION_SECRET)
    #: The mail sink's page (development), e.g. http://localhost:8025: a
    #: pipeline's email receipt then links to the email as it arrived. Unset: no link.
    MAILSINK_UI_URL: str | None = None

    _split_lists = field_validator(
        "CALLBACK_SIGNING_PREVIOUS_SECRETS",
        "OIDC_ALGORITHMS",
        "PRINCIPAL_START_LIMITS",
        "RECIPIENT_DOMAINS",
        mode="before",
    )(_comma_separated)

    @field_validator(
        "CALLBACK_PORT",
        "API_KEYS_FILE",
        "OIDC_ISSUER",
        "OIDC_AUDIENCE",
        "OIDC_JWKS_URL",
        "DATABRICKS_NOTIFICATION_PASSWORD",
        "MAILSINK_UI_URL",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # compose's ${VAR:-} passes an unset variable on as an empty one.
        return None if value == "" else value

    @property
    def callback_signing_secrets(self) -> tuple[str, ...]:
        """Every secret a callback key may be derived from, the current one first."""
        return (self.CALLBACK_SIGNING_SECRET, *self.CALLBACK_SIGNING_PREVIOUS_SECRETS)

    @model_validator(mode="after")
    def _previous_secrets_are_secrets(self) -> Self:
        if self.CALLBACK_SIGNING_SECRET in self.CALLBACK_SIGNING_PREVIOUS_SECRETS:
            raise ValueError("CALLBACK_SIGNING_PREVIOUS_SECRETS lists the current CALLBACK_SIGNING_SECRET")
        if self.ENVIRONMENT == "development":
            return self
        for position, secret in enumerate(self.CALLBACK_SIGNING_PREVIOUS_SECRETS, start=1):
            if secret == DEVELOPMENT_SIGNING_SECRET or len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"CALLBACK_SIGNING_PREVIOUS_SECRETS: secret {position} is the development default or shorter "
                    f"than {MIN_SECRET_LENGTH} characters; refused for ENVIRONMENT={self.ENVIRONMENT}"
                )
        return self

    @model_validator(mode="after")
    def _real_notification_password_outside_development(self) -> Self:
        password = self.DATABRICKS_NOTIFICATION_PASSWORD
        if self.ENVIRONMENT == "development" or password is None:
            return self
        value = password.get_secret_value()
        if value.startswith(DEVELOPMENT_SECRET_PREFIX) or len(value) < MIN_SECRET_LENGTH:
            raise ValueError(
                "DATABRICKS_NOTIFICATION_PASSWORD is the development default or shorter than "
                f"{MIN_SECRET_LENGTH} characters; refused for ENVIRONMENT={self.ENVIRONMENT}"
            )
        return self

    @field_validator("MAILSINK_UI_URL")
    @classmethod
    def _mailsink_url_is_a_web_address(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("MAILSINK_UI_URL must be an http:// or https:// address, e.g. http://localhost:8025")
        return value.rstrip("/") if value is not None else None

    @model_validator(mode="after")
    def _callback_port_is_another_port(self) -> Self:
        if self.CALLBACK_PORT == self.PORT:
            raise ValueError(f"CALLBACK_PORT must differ from PORT ({self.PORT})")
        return self

    @model_validator(mode="after")
    def _clients_can_authenticate(self) -> Self:
        if self.OIDC_ISSUER is None:
            stray = [name for name in ("OIDC_AUDIENCE", "OIDC_JWKS_URL") if getattr(self, name) is not None]
            if stray:
                raise ValueError(f"{', '.join(stray)} set without OIDC_ISSUER")
        elif not self.OIDC_AUDIENCE:
            raise ValueError("OIDC_AUDIENCE is required with OIDC_ISSUER: the aud tokens for this gateway carry")
        refused = sorted(set(self.OIDC_ALGORITHMS) - ASYMMETRIC_ALGORITHMS)
        if refused or not self.OIDC_ALGORITHMS:
            raise ValueError(
                f"OIDC_ALGORITHMS: {', '.join(refused) or 'none given'}; "
                f"choose among {', '.join(sorted(ASYMMETRIC_ALGORITHMS))}"
            )
        if self.API_KEYS_FILE is not None:
            try:
                load_keys_file(self.API_KEYS_FILE, self.ENVIRONMENT)
            except InvalidKeysFile as exc:
                raise ValueError(f"API_KEYS_FILE: {exc}") from None
        elif self.OIDC_ISSUER is None and self.ENVIRONMENT != "development":
            raise ValueError(
                f"no way for clients to authenticate in ENVIRONMENT={self.ENVIRONMENT}: "
                "set API_KEYS_FILE (see python -m pipeline_api.auth.keys), OIDC_ISSUER and OIDC_AUDIENCE, or both"
            )
        return self

    @model_validator(mode="after")
    def _limits_are_readable(self) -> Self:
        try:
            StartLimits.from_settings(self)
            domains = RecipientDomains.from_settings(self)
        except InvalidLimit as exc:
            raise ValueError(str(exc)) from None
        # A schedule's firings email its address as a start's would: the same rule, checked once, here.
        for entry in self.catalogue.startable.values():
            if entry.schedule is not None and (refused := domains.refusal(str(entry.schedule.email))) is not None:
                raise ValueError(f"JOB_CATALOGUE_FILE: the schedule of pipeline {entry.name!r}: {refused}")
        return self

    @property
    def accepts_development_key(self) -> bool:
        """The development API keys (keys.DEVELOPMENT_KEYS) are the keys, in development with no keys file."""
        return self.ENVIRONMENT == "development" and self.API_KEYS_FILE is None

    @model_validator(mode="after")
    def _real_ui_session_secret_outside_development(self) -> Self:
        value = self.UI_SESSION_SECRET.get_secret_value()
        if len(value) < MIN_SECRET_LENGTH:
            raise ValueError(f"UI_SESSION_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        if self.ENVIRONMENT != "development" and value.startswith(DEVELOPMENT_SECRET_PREFIX):
            raise ValueError(
                f"UI_SESSION_SECRET is the development default; refused for ENVIRONMENT={self.ENVIRONMENT}"
            )
        return self
