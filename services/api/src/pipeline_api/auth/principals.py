"""Who is calling and what they may do: the gateway's authorization rules, in one place.

A :class:`Principal` comes from an API key (:mod:`.keys`) or an OIDC token
(:mod:`.oidc`); the dependencies in :mod:`.deps` decide every request with
the two rules here, :meth:`Principal.allows` and :meth:`Principal.may_see`,
and nothing else decides access.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Scope(StrEnum):
    """What a principal may do. ``admin`` is every scope, on every principal's pipelines."""

    START = "start"
    READ = "read"
    CANCEL = "cancel"
    #: Decide at an approval gate that names it (gates name it by default).
    APPROVE = "approve"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    #: How it proved who it is. Part of :attr:`id`, so that an API key's
    #: principal can never be mistaken for an OIDC subject of the same name.
    kind: Literal["key", "oidc"]
    #: The keys file's ``principal``, or the token's ``sub``.
    name: str
    scopes: frozenset[Scope]
    #: The API key's id, for the audit log; not a secret.
    key_id: str | None = None

    @property
    def id(self) -> str:
        """The owner recorded with the pipelines this principal starts."""
        return f"{self.kind}:{self.name}"

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def may_see(self, owner: str | None) -> bool:
        """Whether a pipeline owned by ``owner`` exists for this principal.

        A pipeline with no recorded owner (started before owners were
        recorded) is visible to admins only.
        """
        return Scope.ADMIN in self.scopes or (owner is not None and owner == self.id)
