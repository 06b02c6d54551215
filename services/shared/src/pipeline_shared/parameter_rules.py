"""What a catalogue parameter is, beyond a string: a URL, a path, a whole number.

A job parameter reaches a notebook that may read files and open connections
with it, so "any string up to 2,000 characters" is a way into the driver and
the network behind it. A parameter declares what it is instead, and a value
that is not that is refused before anything is stored or started:

- ``url``: an absolute URL whose scheme and host the operator lists (no
  credentials in it: ``user@host`` is how a reader is fooled about the host);
- ``path``: an absolute path under a listed folder, in normal form (no ``.``
  or ``..`` segment, no ``//``), so it cannot climb out of its folder;
- ``integer``: a whole number, written plainly, in a range.

A parameter with both ``url`` and ``path`` takes either: a value with a scheme
is judged as a URL, any other as a path. The gateway (at start and at repair)
and the worker (before it gives Databricks a value) check the same rule; the
notebook checks its own copy again where it connects (notebooks/pipeline_sources.py),
because a caller of the Jobs API need not pass through either.

These rules see text only. Where a listed host's name resolves to is the
notebook's check: only it connects.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

#: A value that starts with this has a scheme, and is judged as a URL.
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
#: Characters no URL or path parameter may hold: C0 controls (tab and line breaks among them)
#: and DEL, which a log line, a header or a shell would read as a break.
FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
#: A whole number as a person writes it: an optional minus sign, no leading zeros, at most 18 digits.
WHOLE_NUMBER = re.compile(r"^-?(0|[1-9][0-9]{0,17})$")

#: A host as the operator lists it: a lower-case DNS name or an IP literal (IPv6 without brackets).
HostName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9.:-]{0,251}[a-z0-9])?$")]
#: A folder a path may be under: absolute, ending in a slash so /data/ never admits /database.
PathPrefix = Annotated[str, StringConstraints(pattern=r"^/([^/\x00-\x1f\x7f]+/)*$", max_length=1000)]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UrlRule(_Rule):
    """A URL parameter: which schemes and which hosts it may name."""

    schemes: tuple[Literal["https", "http"], ...] = Field(default=("https",), min_length=1)
    #: Exact host names; none listed (the default) refuses every URL.
    hosts: tuple[HostName, ...] = ()

    def problem_with(self, value: str) -> str | None:
        parts = urllib.parse.urlsplit(value)
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            return f"is a URL of scheme {scheme!r}; the schemes allowed are {_listed(self.schemes)}"
        if "@" in parts.netloc:
            return "carries credentials before its host (user@host); they are refused"
        try:
            host, _ = parts.hostname, parts.port
        except ValueError as exc:
            return f"is not a URL: {exc}"
        if not host:
            return "is a URL without a host"
        host = host.rstrip(".")
        if host not in self.hosts:
            return f"names host {host!r}, which is not an allowed host ({_listed(self.hosts)})"
        return None


class PathRule(_Rule):
    """A path parameter: the folders it may be under."""

    prefixes: tuple[PathPrefix, ...] = Field(min_length=1)

    def problem_with(self, value: str) -> str | None:
        under = f"must be a path under {_listed(self.prefixes)}"
        if not value.startswith("/"):
            return under
        segments = value.split("/")[1:]
        if any(segment in (".", "..") for segment in segments):
            return f"{under}, without '.' or '..' segments"
        if any(segment == "" for segment in segments):
            return f"{under}, without empty segments ('//' or a trailing '/')"
        if not any(value.startswith(prefix) for prefix in self.prefixes):
            return under
        return None


class IntegerRule(_Rule):
    """A whole-number parameter and its range, both ends included."""

    minimum: int
    maximum: int

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) exceeds maximum ({self.maximum})")
        return self

    def problem_with(self, value: str) -> str | None:
        if not WHOLE_NUMBER.fullmatch(value):
            return f"must be a whole number from {self.minimum} to {self.maximum}"
        if not self.minimum <= int(value) <= self.maximum:
            return f"is {value}; it must be from {self.minimum} to {self.maximum}"
        return None


def location_problem(url: UrlRule | None, path: PathRule | None, value: str) -> str | None:
    """Why ``value`` is neither a URL ``url`` allows nor a path ``path`` allows, or None.

    Callers pass at least one rule.
    """
    if FORBIDDEN_CHARACTERS.search(value):
        return "holds a control character"
    if SCHEME.match(value):
        if url is not None:
            return url.problem_with(value)
        assert path is not None
        return f"must be a path under {_listed(path.prefixes)}; a URL is not allowed"
    if path is not None:
        return path.problem_with(value)
    assert url is not None
    return f"must be an absolute URL ({_listed(url.schemes)})"


def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(values) if values else "none listed"
