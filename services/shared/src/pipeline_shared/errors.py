"""The domain errors users can meet, each with a stable code.

::

    PipelineError                   code                        HTTP
    ├── PipelineNotFound            pipeline_not_found          404
    ├── PipelineConflict            pipeline_conflict           409
    ├── PipelineAlreadyFinished     pipeline_finished           409
    ├── InvalidCallback             invalid_callback            422
    ├── CallbackUnauthorized        invalid_signature           401
    ├── UnknownCallbackPromise      unknown_promise             404
    ├── CallbackConflict            settlement_conflict         409
    ├── CoordinatorUnavailable      resonate_unavailable        503
    ├── GateNotOpen                 not_awaiting_approval       409
    ├── GateAmbiguous               gate_ambiguous              409
    ├── StepAmbiguous               step_ambiguous              409
    ├── MayNotDecide                may_not_decide              403
    ├── StartLimited                                            429
    │   ├── StartRateLimited        start_rate_limited          429
    │   └── TooManyWaiting          too_many_waiting            429
    └── AccessRefused
        ├── Unauthenticated         unauthenticated             401
        ├── InvalidCredentials      invalid_token               401
        ├── InsufficientScope       insufficient_scope          403
        └── AuthenticationUnavailable  authentication_unavailable  503

Routes map them to HTTP; nothing below the routes knows about HTTP. The
message says what was wrong and, where it helps, what to do. An
:class:`AccessRefused` message never repeats the credentials it refuses: it
goes to strangers and into the audit log.
"""

from __future__ import annotations

from typing import Any


class PipelineError(Exception):
    code: str = "pipeline_error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Field-level problems, for errors about a request body.
        self.details = details


class PipelineNotFound(PipelineError):
    code = "pipeline_not_found"

    def __init__(self, pipeline_id: str) -> None:
        super().__init__(f"no pipeline with id {pipeline_id!r}")


class PipelineConflict(PipelineError):
    """The id is taken by a pipeline started with a different request."""

    code = "pipeline_conflict"


class PipelineAlreadyFinished(PipelineError):
    code = "pipeline_finished"


class NotAwaitingRepair(PipelineError):
    """A repair or abandon of a pipeline that is not waiting for one."""

    code = "not_awaiting_repair"


class PipelineAwaitingRepair(PipelineError):
    """A cancel of a pipeline whose run failed and waits for a repair: it is abandoned instead."""

    code = "pipeline_awaiting_repair"


class GateNotOpen(PipelineError):
    """An approve or reject with no open gate to decide: none open, that one decided, past its deadline, or unknown."""

    code = "not_awaiting_approval"


class GateAmbiguous(PipelineError):
    """An approve or reject naming no gate while several are open: which one is the caller's to say."""

    code = "gate_ambiguous"


class StepAmbiguous(PipelineError):
    """A repair or abandon naming no step while several job steps await repair."""

    code = "step_ambiguous"


class MayNotDecide(PipelineError):
    """A caller who may see the pipeline, but holds none of the scopes its gate names."""

    code = "may_not_decide"


class InvalidCallback(PipelineError):
    """The callback body is not what the notebook sends."""

    code = "invalid_callback"


class CallbackUnauthorized(PipelineError):
    code = "invalid_signature"


class UnknownCallbackPromise(PipelineError):
    code = "unknown_promise"

    def __init__(self, promise_id: str) -> None:
        super().__init__(f"no pipeline is waiting on callback promise {promise_id!r}")


class CallbackConflict(PipelineError):
    """The promise already holds a different outcome."""

    code = "settlement_conflict"


class NotificationsDisabled(PipelineError):
    """The gateway has no credentials for Databricks' notifications, so it takes none."""

    code = "notifications_disabled"


class NotificationUnauthorized(PipelineError):
    """A notification without the destination's basic-auth credentials, or with wrong ones."""

    code = "invalid_notification_credentials"


class InvalidNotification(PipelineError):
    """A notification body that is not Databricks' webhook payload."""

    code = "invalid_notification"


class CoordinatorUnavailable(PipelineError):
    """The Resonate server could not be reached; nothing was changed."""

    code = "resonate_unavailable"


class IndexUnavailable(PipelineError):
    """The pipeline index cannot answer: this gateway runs without the resonate-pg database (in-process tests)."""

    code = "index_unavailable"


class InvalidListQuery(PipelineError):
    """A list filter or cursor that cannot be used; the message names which."""

    code = "invalid_request"


class StartLimited(PipelineError):
    """A start refused by a limit on the caller; it may be tried again after ``retry_after_seconds``."""

    code = "start_limited"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class StartRateLimited(StartLimited):
    """The caller started as many pipelines in the last minute as it may."""

    code = "start_rate_limited"


class TooManyWaiting(StartLimited):
    """The caller has as many unfinished pipelines as it may."""

    code = "too_many_waiting"


class AccessRefused(PipelineError):
    """The caller may not make this request; nothing was read or changed."""


class Unauthenticated(AccessRefused):
    """The request carries no credentials (or none of a kind the gateway takes)."""

    code = "unauthenticated"


class InvalidCredentials(AccessRefused):
    """The API key or token is unknown, revoked, expired, forged or not meant for this gateway."""

    code = "invalid_token"


class InsufficientScope(AccessRefused):
    code = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"this request needs the {scope!r} scope, which your credentials do not grant")
        self.scope = scope


class AuthenticationUnavailable(AccessRefused):
    """Credentials could not be checked (the keys file is unreadable, the OIDC issuer unreachable)."""

    code = "authentication_unavailable"
