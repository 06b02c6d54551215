"""The request shapes the real Resonate server admits, and the rules it checks.

The SDK's reference model reads requests leniently: a missing field becomes a
default, an unknown settle state becomes ``resolved``, a non-string tag is
dropped. The real server deserializes each request's ``data`` into a typed
struct and validates it, answering 400 with a message when it does not fit
(resonatehq/resonate ``src/types.rs``). An SDK bug that the lenient model
would hide therefore shows up against the real server only -- so the
stand-in applies the same rules, through these models.

Field names, bounds, and the cross-field rules (lineage prefixes, awaiter and
task ids) follow ``src/types.rs``; the messages are the server's where it has
one. This module decides what is admissible and nothing else: what a request
*does* is :mod:`resonate_dev.model`'s.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: The protocol version the stand-in answers with and the only one it accepts,
#: the same single version the real server's ``SUPPORTED_VERSIONS`` lists.
PROTOCOL_VERSION = "2026-04-01"
SUPPORTED_VERSIONS = (PROTOCOL_VERSION,)

#: Largest page a search may ask for; the real server refuses more.
MAX_SEARCH_LIMIT = 1000

type PromiseState = Literal[
    "pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout"
]
type SettleState = Literal["resolved", "rejected", "rejected_canceled"]
type TaskState = Literal["pending", "acquired", "suspended", "halted", "fulfilled"]


class Refused(Exception):
    """A request the real server answers with an error status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class InvalidRequest(Refused):
    """A request whose data the real server would refuse with 400."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class _Data(BaseModel):
    # Strict: JSON 5.0 is not an integer and "5" is not a number, as for serde.
    # Unknown fields are ignored, as serde does without deny_unknown_fields.
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class WireValue(_Data):
    """A promise's ``param`` or ``value``: optional headers, optional base64 data."""

    headers: dict[str, str] | None = None
    data: str | None = None

    def wire(self) -> dict[str, Any]:
        """The value as the server writes it: absent parts are left out."""
        out: dict[str, Any] = {}
        if self.headers is not None:
            out["headers"] = self.headers
        if self.data is not None:
            out["data"] = self.data
        return out


def origin(id: str) -> str:
    """The lineage origin of an id: everything before its first ``:``."""
    return id.split(":", 1)[0]


def _extends(id: str, ancestor: str) -> bool:
    """Whether ``id`` is ``ancestor`` or one of its lineage descendants."""
    separator = "." if ":" in ancestor else ":"
    return id == ancestor or id.startswith(ancestor + separator)


class PromiseGetData(_Data):
    id: str = Field(min_length=1)


class PromiseCreateData(_Data):
    id: str = Field(min_length=1)
    timeout_at: int = Field(alias="timeoutAt", ge=0)
    param: WireValue = Field(default_factory=WireValue)
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _lineage(self) -> PromiseCreateData:
        tags = self.tags
        if "\0" in self.id:
            raise ValueError("Promise ID must not contain null bytes")
        root = tags.get("resonate:origin")
        if root is not None:
            if ":" in root:
                raise ValueError("resonate:origin must not contain ':'")
            if self.id != root and not self.id.startswith(root + ":"):
                raise ValueError("Promise ID must be prefixed by resonate:origin")
        branch = tags.get("resonate:branch")
        if branch is not None and not _extends(self.id, branch):
            raise ValueError("Promise ID must be prefixed by resonate:branch")
        parent = tags.get("resonate:parent")
        if parent is not None and not _extends(self.id, parent):
            raise ValueError("Promise ID must be prefixed by resonate:parent")
        prefix = tags.get("resonate:prefix")
        if prefix is not None and "." in prefix:
            raise ValueError("resonate:prefix must not contain '.'")
        delay = tags.get("resonate:delay")
        if delay is not None:
            if not delay.isdigit():
                raise ValueError("resonate:delay must be a non-negative integer")
            if int(delay) >= self.timeout_at:
                raise ValueError("resonate:delay must be less than timeoutAt")
            if "resonate:target" not in tags:
                raise ValueError("resonate:delay requires a resonate:target tag")
        return self


class PromiseSettleData(_Data):
    id: str = Field(min_length=1)
    state: SettleState
    value: WireValue = Field(default_factory=WireValue)


class PromiseRegisterCallbackData(_Data):
    awaited: str = Field(min_length=1)
    awaiter: str = Field(min_length=1)

    @model_validator(mode="after")
    def _same_lineage(self) -> PromiseRegisterCallbackData:
        if self.awaited == self.awaiter:
            raise ValueError("Awaited and awaiter must be different promises")
        if origin(self.awaited) != origin(self.awaiter):
            raise ValueError("Awaiter and awaited must belong to the same origin")
        return self


class PromiseRegisterListenerData(_Data):
    awaited: str = Field(min_length=1)
    address: str = Field(min_length=1)


class PromiseSearchData(_Data):
    state: PromiseState | None = None
    tags: dict[str, str] | None = None
    limit: int | None = Field(default=None, ge=1)
    cursor: str | None = None


class TaskIdData(_Data):
    """``task.get``, ``task.halt`` and ``task.continue``: a task id alone."""

    id: str = Field(min_length=1)


class _Action[T](_Data):
    """A nested request envelope carried inside a task request."""

    kind: str
    head: Any = None
    data: T


class TaskCreateData(_Data):
    pid: str = Field(min_length=1)
    ttl: int = Field(ge=1)
    action: _Action[PromiseCreateData]

    @model_validator(mode="after")
    def _targeted(self) -> TaskCreateData:
        tags = self.action.data.tags
        if "resonate:target" not in tags:
            raise ValueError("Action must have a resonate:target tag")
        if "resonate:delay" in tags:
            raise ValueError("Action must not have a resonate:delay tag")
        return self


class TaskAcquireData(_Data):
    id: str = Field(min_length=1)
    version: int = Field(ge=0)
    pid: str = Field(min_length=1)
    ttl: int = Field(ge=1)


class TaskReleaseData(_Data):
    id: str = Field(min_length=1)
    version: int = Field(ge=0)


class TaskSuspendData(_Data):
    id: str = Field(min_length=1)
    version: int = Field(ge=0)
    actions: list[_Action[PromiseRegisterCallbackData]] = Field(min_length=1)

    @model_validator(mode="after")
    def _awaits_for_itself(self) -> TaskSuspendData:
        for action in self.actions:
            if action.data.awaiter != self.id:
                raise ValueError("All action awaiter IDs must match the task ID")
            if action.data.awaited == self.id:
                raise ValueError("Action awaited promise must not equal the task ID")
            if origin(action.data.awaited) != origin(self.id):
                raise ValueError("Awaited promise must belong to the same origin as the task")
        return self


class TaskFulfillData(_Data):
    id: str = Field(min_length=1)
    version: int = Field(ge=0)
    action: _Action[PromiseSettleData]

    @model_validator(mode="after")
    def _own_promise(self) -> TaskFulfillData:
        if self.action.data.id != self.id:
            raise ValueError("Action ID must match the task ID")
        return self


class TaskFenceData(_Data):
    id: str = Field(min_length=1)
    version: int = Field(ge=0)
    action: _Action[dict[str, Any]]

    @model_validator(mode="after")
    def _other_promise(self) -> TaskFenceData:
        if self.action.data.get("id") == self.id:
            raise ValueError("Action ID must not equal the task ID")
        return self


class TaskRef(_Data):
    id: str
    version: int


class TaskHeartbeatData(_Data):
    pid: str = Field(min_length=1)
    tasks: list[TaskRef] = Field(min_length=1)


class TaskSearchData(_Data):
    state: TaskState | None = None
    limit: int | None = Field(default=None, ge=1)
    cursor: str | None = None


class ScheduleIdData(_Data):
    id: str = Field(min_length=1)


class ScheduleCreateData(_Data):
    id: str = Field(min_length=1)
    cron: str = Field(min_length=1)
    promise_id: str = Field(alias="promiseId", min_length=1)
    promise_timeout: int = Field(alias="promiseTimeout", ge=0)
    promise_param: WireValue = Field(alias="promiseParam", default_factory=WireValue)
    promise_tags: dict[str, str] = Field(alias="promiseTags", default_factory=dict)

    @model_validator(mode="after")
    def _fireable(self) -> ScheduleCreateData:
        if ":" in self.id:
            raise ValueError("Schedule ID must not contain ':'")
        if "resonate:target" not in self.promise_tags:
            raise ValueError("promiseTags must include a resonate:target tag")
        return self


class ScheduleSearchData(_Data):
    tags: dict[str, str] | None = None
    limit: int | None = Field(default=None, ge=1)
    cursor: str | None = None


def parse[M: BaseModel](model: type[M], data: Any, *, what: str = "request") -> M:
    """Validate ``data`` as ``model`` or raise :class:`InvalidRequest`.

    The message names each offending field, e.g.
    ``Invalid request: timeoutAt: Input should be a valid integer``.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid {what}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
