"""API keys: how backend services authenticate to the gateway.

A key reads ``pl_<id>_<secret>``: the id names its entry in the keys file and
is not secret; the secret is 256 random bits. The keys file (``API_KEYS_FILE``,
TOML) holds one entry per key: its id, the SHA-256 of the whole key, the
principal it speaks for and its scopes. It never holds a key, so a copy of the
file lets nobody in. A fast hash is the right one here, unlike for passwords:
nobody can guess 256 random bits, so there is nothing for a slow hash to slow
down, and every request pays for it. Digests are compared in constant time.

The file is read again when it changes (mtime, size or inode), looked at no
more than once a second, so keys are added and revoked without a restart and
without a stat per request. Write it whole and rename it into place: a
half-written or otherwise invalid file refuses every API key (503, logged)
until it is fixed, rather than keep accepting a key someone just revoked.

Mint a key and print its entry for the file::

    python -m pipeline_api.auth.keys mint --principal billing-service --scopes start,read,cancel

Development: with ``ENVIRONMENT=development`` and no ``API_KEYS_FILE``,
:data:`DEVELOPMENT_API_KEY` (principal ``dev``, scopes start, read and
cancel) and :data:`DEVELOPMENT_ADMIN_API_KEY` (principal ``dev-admin``, scope
admin, for trying the jobs only operators may start) are the keys accepted.
Both are refused in any other environment, and so is a keys file that lists either.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline_shared.errors import AuthenticationUnavailable

from .principals import Principal, Scope

logger = logging.getLogger("pipeline_api.keys")

#: What marks a bearer credential as one of this gateway's API keys (and lets
#: secret scanners recognise a leaked one).
KEY_PREFIX = "pl_"
KEY_ID_PATTERN = r"^[a-z0-9]{1,32}$"
#: Principals end up in audit logs and in the owner tag of every pipeline they start.
PRINCIPAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
_KEY = re.compile(r"pl_([a-z0-9]{1,32})_([A-Za-z0-9_-]{16,128})")

#: The development stack's API key (compose runs ENVIRONMENT=development and no
#: keys file). Public on purpose, like the development signing secret.
DEVELOPMENT_API_KEY = "pl_dev_development-only-insecure-api-key"
#: Without admin: development exercises the same ownership rules as a
#: deployment does, rather than an admin's view in which every check passes.
#: With approve, so a developer can decide the gates of the pipelines they try.
DEVELOPMENT_SCOPES = frozenset({Scope.START, Scope.READ, Scope.CANCEL, Scope.APPROVE})
DEVELOPMENT_PRINCIPAL = "dev"
#: The development stack's admin key, public like the one above: it lets a
#: newcomer try the catalogue's jobs that only operators may start
#: (``start_scopes = ["admin"]``) on the development stack, nowhere else.
DEVELOPMENT_ADMIN_API_KEY = "pl_devadmin_development-only-insecure-admin-key"
DEVELOPMENT_ADMIN_PRINCIPAL = "dev-admin"
#: Every public development key, by key id: refused outside ENVIRONMENT=development.
DEVELOPMENT_KEYS = {
    "dev": (DEVELOPMENT_API_KEY, DEVELOPMENT_PRINCIPAL, DEVELOPMENT_SCOPES),
    "devadmin": (DEVELOPMENT_ADMIN_API_KEY, DEVELOPMENT_ADMIN_PRINCIPAL, frozenset({Scope.ADMIN})),
}

#: How often the keys file is looked at for changes, at most.
RELOAD_CHECK_SECONDS = 1.0


def key_digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class KeyEntry(BaseModel):
    """One key in the keys file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=KEY_ID_PATTERN)
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    principal: str = Field(pattern=PRINCIPAL_PATTERN)
    scopes: frozenset[Scope] = Field(min_length=1)

    def principal_of(self) -> Principal:
        return Principal("key", self.principal, self.scopes, key_id=self.id)

    def as_toml(self) -> str:
        # json.dumps of these strings (pattern-checked above) is a valid TOML basic string.
        scopes = ", ".join(json.dumps(scope.value) for scope in sorted(self.scopes))
        return "\n".join(
            [
                "[[keys]]",
                f"id = {json.dumps(self.id)}",
                f"hash = {json.dumps(self.hash)}",
                f"principal = {json.dumps(self.principal)}",
                f"scopes = [{scopes}]",
            ]
        )


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry] = Field(default_factory=list)

    @field_validator("keys")
    @classmethod
    def _ids_are_unique(cls, keys: list[KeyEntry]) -> list[KeyEntry]:
        seen: set[str] = set()
        for entry in keys:
            if entry.id in seen:
                raise ValueError(f"key id {entry.id!r} appears twice")
            seen.add(entry.id)
        return keys


class InvalidKeysFile(ValueError):
    """The keys file cannot be used; the message names the file and what is wrong, never a value in it."""


def load_keys_file(path: Path, environment: str) -> dict[str, KeyEntry]:
    """The entries of the keys file at ``path``, by key id."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        entries = KeysFile.model_validate(document).keys
    except OSError as exc:
        raise InvalidKeysFile(f"{path}: cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidKeysFile(f"{path}: not TOML ({exc})") from None
    except ValidationError as exc:
        # Without the input: a raw key pasted into the wrong field must not reach a log.
        problems = [
            f"{'.'.join(map(str, error['loc'])) or 'file'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        ]
        raise InvalidKeysFile(f"{path}: " + "; ".join(problems)) from None
    public = {key_digest(key) for key, _, _ in DEVELOPMENT_KEYS.values()}
    if environment != "development" and any(e.hash in public for e in entries):
        raise InvalidKeysFile(f"{path}: lists a development API key, refused for ENVIRONMENT={environment}")
    return {entry.id: entry for entry in entries}


class ApiKeys:
    """The API keys the gateway accepts, kept in step with the keys file."""

    def __init__(
        self,
        entries: dict[str, KeyEntry],
        path: Path | None = None,
        *,
        environment: str = "development",
        check_interval: float = RELOAD_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries = entries
        self._path = path
        self._environment = environment
        self._check_interval = check_interval
        self._clock = clock
        self._checked_at = clock()
        self._file_state = self._stat()
        #: Why the keys file cannot be used right now; None while it can.
        self._broken: str | None = None

    @classmethod
    def from_file(
        cls,
        path: Path,
        environment: str,
        *,
        check_interval: float = RELOAD_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> ApiKeys:
        """Read the keys file; raises InvalidKeysFile (at start, so the gateway does not come up without it)."""
        entries = load_keys_file(path, environment)
        return cls(entries, path, environment=environment, check_interval=check_interval, clock=clock)

    @classmethod
    def development(cls) -> ApiKeys:
        """The public development keys; only ever built for ENVIRONMENT=development (see GatewaySettings)."""
        return cls(
            {
                key_id: KeyEntry(id=key_id, hash=key_digest(key), principal=principal, scopes=scopes)
                for key_id, (key, principal, scopes) in DEVELOPMENT_KEYS.items()
            }
        )

    @staticmethod
    def looks_like_key(credential: str) -> bool:
        return credential.startswith(KEY_PREFIX)

    def principal_for(self, key: str) -> Principal | None:
        """The principal ``key`` speaks for, or None if it is not a current key.

        Raises AuthenticationUnavailable while the keys file is unusable.
        """
        self._follow_file()
        if self._broken is not None:
            raise AuthenticationUnavailable("API keys cannot be checked right now; retry later")
        match = _KEY.fullmatch(key)
        entry = self._entries.get(match.group(1)) if match else None
        # Compared even when no entry matches, so that an unknown id costs what a wrong secret does.
        expected = entry.hash if entry is not None else key_digest("")
        if hmac.compare_digest(key_digest(key), expected) and entry is not None:
            return entry.principal_of()
        return None

    def current(self, key_id: str, digest: str) -> Principal | None:
        """The principal of key ``key_id`` if the keys file still lists it with ``digest``; else None.

        For sessions that outlive the request that showed the key (the web
        page's): the key itself is gone, its digest is what is kept. A key
        deleted from the file, or minted anew under the same id, ends them.
        Raises AuthenticationUnavailable while the keys file is unusable.
        """
        self._follow_file()
        if self._broken is not None:
            raise AuthenticationUnavailable("API keys cannot be checked right now; retry later")
        entry = self._entries.get(key_id)
        if entry is None or not hmac.compare_digest(entry.hash, digest):
            return None
        return entry.principal_of()

    def _stat(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            state = os.stat(self._path)
        except OSError:
            return None
        return state.st_mtime_ns, state.st_size, state.st_ino

    def _follow_file(self) -> None:
        if self._path is None or self._clock() - self._checked_at < self._check_interval:
            return
        self._checked_at = self._clock()
        state = self._stat()
        if state == self._file_state:
            return
        self._file_state = state
        try:
            entries = load_keys_file(self._path, self._environment)
        except InvalidKeysFile as exc:
            self._broken = str(exc)
            logger.error("API keys refused until the keys file is fixed: %s", exc)
            return
        added, removed = entries.keys() - self._entries.keys(), self._entries.keys() - entries.keys()
        self._entries, self._broken = entries, None
        logger.info(
            "API keys file reloaded",
            extra={"fields": {"keys": len(entries), "added": sorted(added), "removed": sorted(removed)}},
        )


def mint(principal: str, scopes: frozenset[Scope], key_id: str | None = None) -> tuple[str, KeyEntry]:
    """A new key and its file entry. The key exists only in the return value."""
    key_id = key_id or secrets.token_hex(6)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return key, KeyEntry(id=key_id, hash=key_digest(key), principal=principal, scopes=scopes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline_api.auth.keys", description="Mint gateway API keys.")
    commands = parser.add_subparsers(dest="command", required=True)
    minting = commands.add_parser("mint", help="make a new key and print it with its entry for API_KEYS_FILE")
    minting.add_argument("--principal", required=True, help="who the key speaks for, e.g. billing-service")
    minting.add_argument(
        "--scopes",
        default="start,read,cancel",
        help=f"comma-separated, of {', '.join(Scope)} (default: start,read,cancel)",
    )
    minting.add_argument("--id", help="the key's id (default: random)")
    args = parser.parse_args(argv)
    try:
        scopes = frozenset(Scope(scope.strip()) for scope in args.scopes.split(",") if scope.strip())
        key, entry = mint(args.principal, scopes, args.id)
    except (ValueError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"# API key for {entry.principal}. Shown only now: hand it to the client, which sends it as")
    print("# 'Authorization: Bearer <key>' (the pipelines CLI reads it from PIPELINES_API_KEY).")
    print(key)
    print()
    print("# Append to the keys file (API_KEYS_FILE); delete the entry to revoke the key.")
    print(entry.as_toml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
