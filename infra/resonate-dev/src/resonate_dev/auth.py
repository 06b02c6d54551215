"""Optional bearer-token auth, configured and checked as the real server does.

Off unless ``RESONATE_AUTH__PUBLICKEY`` is set (resonatehq/resonate
``src/auth.rs``, ``src/config.rs``). The token is a JWT: with a public key
file (RSA, EC P-256/P-384 or Ed25519, PEM) its signature is verified; with the
value ``none`` it is decoded unverified, for tests. Either way ``exp`` is
required and checked, and ``iss`` / ``aud`` when configured.

Where the token travels is the server's choice too: in ``head.auth`` of
every ``POST /`` envelope, and as ``Authorization: Bearer ...`` on
``GET /poll/...``. Both SDKs send it in both places.

After authentication comes the server's prefix authorization: a token whose
``role`` is ``admin`` may do anything; otherwise its ``prefix`` claim must be
a string that every resource id the request names starts with (the empty
string allows everything). Failures answer 401 ``Unauthorized`` and 403
``Forbidden``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

logger = logging.getLogger(__name__)

#: The value of ``RESONATE_AUTH__PUBLICKEY`` that accepts unsigned tokens.
UNSIGNED = "none"

_RSA_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
_EC_ALGORITHMS = ["ES256", "ES384"]
_ED_ALGORITHMS = ["EdDSA"]


class AuthConfigError(Exception):
    """The auth settings cannot be used (unreadable or unsupported key)."""


@dataclass(frozen=True, slots=True)
class Denied:
    status: int
    message: str


UNAUTHORIZED = Denied(401, "Unauthorized")
FORBIDDEN = Denied(403, "Forbidden")


class Authenticator:
    """Verifies tokens and authorizes requests by their ``prefix`` claim."""

    def __init__(self, publickey: str, *, iss: str | None = None, aud: str | None = None) -> None:
        self._iss = iss
        self._aud = aud
        self._key: Any = None
        self._algorithms: list[str] = []
        if publickey != UNSIGNED:
            self._key, self._algorithms = _load_key(publickey)
            logger.info("auth enabled with key %s", publickey)
        else:
            logger.warning("auth enabled in unsigned mode: token signatures are not checked")

    def verify(self, token: str | None) -> dict[str, Any] | None:
        """The token's claims, or None when it is missing or fails verification."""
        if not token:
            return None
        required = ["exp"]
        if self._iss is not None:
            required.append("iss")
        if self._aud is not None:
            required.append("aud")
        options: dict[str, Any] = {
            "require": required,
            "verify_exp": True,
            "verify_iss": self._iss is not None,
            "verify_aud": self._aud is not None,
        }
        try:
            if self._key is None:
                options["verify_signature"] = False
                claims = jwt.decode(token, options=options, issuer=self._iss, audience=self._aud)
            else:
                claims = jwt.decode(
                    token,
                    self._key,
                    algorithms=self._algorithms,
                    options=options,
                    issuer=self._iss,
                    audience=self._aud,
                )
        except jwt.PyJWTError as exc:
            logger.info("token rejected: %s", exc)
            return None
        return claims if isinstance(claims, dict) else None

    def check_stream(self, authorization: str | None) -> Denied | None:
        """Authenticate ``GET /poll/...`` by its ``Authorization: Bearer`` header."""
        token = authorization.removeprefix("Bearer ") if authorization else None
        if authorization is not None and token == authorization:
            token = None
        return None if self.verify(token) is not None else UNAUTHORIZED

    def check_request(self, kind: str, data: dict[str, Any], token: str | None) -> Denied | None:
        """Authenticate and authorize one ``POST /`` envelope."""
        claims = self.verify(token)
        if claims is None:
            return UNAUTHORIZED
        role = claims.get("role")
        if isinstance(role, str) and role.lower() == "admin":
            return None
        prefix = claims.get("prefix")
        if not isinstance(prefix, str):
            return FORBIDDEN
        if prefix == "":
            return None
        if kind == "task.heartbeat":
            tasks = data.get("tasks")
            ids = (
                [t.get("id") for t in tasks if isinstance(t, dict)]
                if isinstance(tasks, list)
                else []
            )
            ok = all(not isinstance(i, str) or i.startswith(prefix) for i in ids)
            return None if ok else FORBIDDEN
        resource = resource_id(kind, data)
        if resource is None or resource.startswith(prefix):
            return None
        return FORBIDDEN


def resource_id(kind: str, data: dict[str, Any]) -> str | None:
    """The id a request acts on, for the prefix check; "" where none can satisfy it."""
    if kind in ("promise.search", "task.search", "schedule.search"):
        return ""
    if kind in (
        "promise.get",
        "promise.create",
        "promise.settle",
        "task.get",
        "task.acquire",
        "task.release",
        "task.fulfill",
        "task.suspend",
        "task.fence",
        "task.halt",
        "task.continue",
        "schedule.get",
        "schedule.delete",
    ):
        return _str_or_none(data.get("id"))
    if kind in ("promise.register_callback", "promise.register_listener"):
        return _str_or_none(data.get("awaited"))
    if kind == "schedule.create":
        return _str_or_none(data.get("promiseId"))
    if kind == "task.create":
        action = data.get("action")
        inner = action.get("data") if isinstance(action, dict) else None
        return _str_or_none(inner.get("id")) if isinstance(inner, dict) else None
    # Fail closed: an operation without a rule needs an unrestricted token.
    return ""


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _load_key(path: str) -> tuple[Any, list[str]]:
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"Failed to read public key file '{path}': {exc}") from exc
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise AuthConfigError(f"Invalid public key in '{path}': {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey):
        return key, _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp256r1", "secp384r1"):
        return key, _EC_ALGORITHMS
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, _ED_ALGORITHMS
    raise AuthConfigError(
        f"Unsupported public key in '{path}'. Supported types: RSA, EC (P-256/P-384), Ed25519."
    )
