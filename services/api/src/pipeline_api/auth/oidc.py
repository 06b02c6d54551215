"""OIDC access tokens: how people and services with an identity provider authenticate.

A token is a JWT the configured issuer signed. It is accepted when its
signature verifies under a key the issuer publishes (its JWKS, found through
OIDC discovery unless ``OIDC_JWKS_URL`` names it), with an algorithm on the
allow-list (asymmetric only: ``none`` and the HMAC family are never
accepted), and its ``exp``, ``nbf``, ``iss`` and ``aud`` hold. The principal
is its ``sub``; its scopes come from one claim (``OIDC_SCOPES_CLAIM``, a
space-separated string as in ``scope`` or a list as in ``scp``).

PyJWT does the cryptography and keeps the key set: PyJWKClient caches it for
:data:`JWKS_CACHE_SECONDS` and fetches it again early only for a key id it
does not know, at most once per :data:`JWKS_REFRESH_COOLDOWN_SECONDS`, so
tokens naming made-up keys cannot make the gateway hammer the issuer. Its
fetches block, so they run in a worker thread, never on the event loop that
also serves the callbacks. A token is refused on its header and unverified
issuer before any key is looked up, for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpx
import jwt
from jwt import PyJWK, PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError, PyJWKError, PyJWKSetError

from pipeline_shared.errors import AuthenticationUnavailable, InvalidCredentials

from .principals import Principal, Scope

logger = logging.getLogger("pipeline_api.oidc")

#: Signature algorithms a deployment may allow. Symmetric ones are left out:
#: with them the issuer's published key would be the signing key.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: How long the issuer's key set is trusted before it is fetched again.
JWKS_CACHE_SECONDS = 300
#: Shortest time between two fetches for an unknown key id: an issuer that
#: rotated its key is followed within this, a flood of made-up ids costs one fetch.
JWKS_REFRESH_COOLDOWN_SECONDS = 30
#: One request to the issuer (discovery or key set), at most.
ISSUER_TIMEOUT_SECONDS = 5.0
#: After a failed discovery, requests fail fast for this long instead of each waiting on the issuer.
DISCOVERY_RETRY_SECONDS = 5.0
#: Clock skew allowed on exp, nbf and iat.
LEEWAY_SECONDS = 30
#: RFC 7519 and OIDC Core: a subject is at most 255 ASCII characters.
MAX_SUBJECT_LENGTH = 255

_REFUSALS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is not meant for this gateway (aud)"),
    (jwt.InvalidIssuerError, "the token was not issued by the issuer this gateway trusts (iss)"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "the token is signed with an algorithm this gateway does not accept"),
    (jwt.InvalidTokenError, "the token is not a valid JWT"),
]


def _refusal(exc: jwt.InvalidTokenError) -> InvalidCredentials:
    """A fixed message per kind of failure: PyJWT's own messages may quote the token."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return InvalidCredentials(f"the token has no {exc.claim!r} claim")
    return InvalidCredentials(next(message for kind, message in _REFUSALS if isinstance(exc, kind)))


def scopes_from(claim: Any, prefix: str) -> frozenset[Scope]:
    """The gateway scopes a token's scope claim grants; values it does not know are ignored."""
    values: Iterable[Any] = claim.split() if isinstance(claim, str) else claim if isinstance(claim, list) else ()
    known = {scope.value for scope in Scope}
    return frozenset(
        Scope(value.removeprefix(prefix))
        for value in values
        if isinstance(value, str) and value.startswith(prefix) and value.removeprefix(prefix) in known
    )


class OidcVerifier:
    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        jwks_url: str | None = None,
        algorithms: Iterable[str] = ("RS256", "ES256"),
        scopes_claim: str = "scope",
        scope_prefix: str = "",
    ) -> None:
        self.issuer = issuer
        self._audience = audience
        self._algorithms = sorted(algorithms)
        self._scopes_claim = scopes_claim
        self._scope_prefix = scope_prefix
        self._jwks_url = jwks_url
        self._keys: PyJWKClient | None = None
        self._discovery_lock = threading.Lock()
        self._discovery_failed_at = -DISCOVERY_RETRY_SECONDS

    async def principal_for(self, token: str) -> Principal:
        """The principal the token speaks for; raises InvalidCredentials or AuthenticationUnavailable."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise InvalidCredentials("the token is not a valid JWT") from None
        if header.get("alg") not in self._algorithms:
            raise InvalidCredentials("the token is signed with an algorithm this gateway does not accept")
        if unverified.get("iss") != self.issuer:
            raise InvalidCredentials("the token was not issued by the issuer this gateway trusts (iss)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidCredentials("the token names no signing key (kid)")
        key = await asyncio.to_thread(self._signing_key, kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise _refusal(exc) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.isascii() or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
            raise InvalidCredentials("the token's subject (sub) is not 1-255 ASCII characters")
        if not subject.isprintable():
            raise InvalidCredentials("the token's subject (sub) has control characters")
        return Principal("oidc", subject, scopes_from(claims.get(self._scopes_claim), self._scope_prefix))

    # ── in a worker thread ───────────────────────────────────────────────

    def _signing_key(self, kid: str) -> PyJWK:
        try:
            return self._key_set().get_signing_key(kid)
        except PyJWKClientConnectionError as exc:
            logger.warning("the OIDC issuer's key set cannot be fetched: %s", exc)
            raise AuthenticationUnavailable("the OIDC issuer's keys cannot be fetched right now; retry later") from exc
        except PyJWKClientError:
            raise InvalidCredentials("the token is signed with a key the issuer does not publish (kid)") from None
        except (PyJWKError, PyJWKSetError) as exc:
            raise AuthenticationUnavailable("the OIDC issuer publishes no usable keys right now") from exc

    def _key_set(self) -> PyJWKClient:
        with self._discovery_lock:
            if self._keys is None:
                url = self._jwks_url or self._discover_jwks_url()
                self._keys = PyJWKClient(
                    url,
                    lifespan=JWKS_CACHE_SECONDS,
                    timeout=ISSUER_TIMEOUT_SECONDS,
                    cooldown_duration=JWKS_REFRESH_COOLDOWN_SECONDS,
                )
            return self._keys

    def _discover_jwks_url(self) -> str:
        """OIDC Discovery 1.0: the issuer's metadata names its key set, and must name the issuer itself."""
        if time.monotonic() - self._discovery_failed_at < DISCOVERY_RETRY_SECONDS:
            raise AuthenticationUnavailable("the OIDC issuer cannot be reached right now; retry later")
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            response = httpx.get(url, timeout=ISSUER_TIMEOUT_SECONDS, follow_redirects=False)
            response.raise_for_status()
            metadata = response.json()
            jwks_uri = metadata["jwks_uri"]
            if metadata.get("issuer") != self.issuer:
                raise ValueError(f"the discovery document names issuer {metadata.get('issuer')!r}")
            if not isinstance(jwks_uri, str):
                raise ValueError("jwks_uri is not a string")
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self._discovery_failed_at = time.monotonic()
            logger.warning("OIDC discovery at %s failed: %s", url, exc)
            raise AuthenticationUnavailable("the OIDC issuer cannot be reached right now; retry later") from exc
        return jwks_uri
