"""Client authentication: from a bearer credential to a :class:`Principal`, and refusals as HTTP says them.

Two kinds of credential travel in ``Authorization: Bearer``: the gateway's
own API keys (:mod:`.keys`, told apart by their ``pl_`` prefix) and OIDC
access tokens (:mod:`.oidc`). :mod:`.deps` calls :meth:`Authenticator.principal_for`
once per request; nothing else looks at credentials.

Every refusal is one audit log line (:func:`audit_refusal`) and, for 401 and
403, a ``WWW-Authenticate`` challenge as RFC 6750 section 3 describes it: no
error code when the request carried no credentials, ``invalid_token`` when
they were wrong, ``insufficient_scope`` (with the scope needed) when they
were right but not enough. Neither ever repeats the credential.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import jwt
from starlette.requests import Request

from pipeline_shared.errors import (
    AccessRefused,
    InsufficientScope,
    InvalidCredentials,
    PipelineError,
    Unauthenticated,
)

from ..settings import GatewaySettings
from .keys import ApiKeys, key_digest
from .oidc import OidcVerifier
from .principals import Principal

logger = logging.getLogger("pipeline_api.audit")

#: The protection space named in every challenge.
REALM = "pipelines"

#: RFC 6750 3: error_description may hold only these characters (no quote, no backslash).
_NOT_IN_DESCRIPTION = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


@dataclass(frozen=True)
class SignIn:
    """A credential shown once, for a session that outlives the request (the web page's)."""

    principal: Principal
    #: When the credential stops being valid by itself (an OIDC token's
    #: ``exp``, seconds since the epoch); None for an API key, valid until revoked.
    expires_at: int | None
    #: An API key's digest, as the keys file lists it: what
    #: :meth:`Authenticator.still_signed_in` checks the key against later.
    #: Not the key, and no way to one.
    key_digest: str | None
    #: How: :data:`API_KEY_METHOD`, or :func:`oidc_method` of the issuer.
    #: A session keeps it, and is refused once the gateway no longer signs in that way.
    method: str


#: The sign-in method of an API key of the gateway's keys file (or its development key).
API_KEY_METHOD = "api_key"


def oidc_method(issuer: str) -> str:
    """The sign-in method of an OIDC access token from ``issuer``: a token of another issuer is another method."""
    return f"oidc {issuer}"


class Authenticator:
    def __init__(self, keys: ApiKeys | None, oidc: OidcVerifier | None) -> None:
        self._keys = keys
        self._oidc = oidc

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Authenticator:
        keys = None
        if settings.API_KEYS_FILE is not None:
            keys = ApiKeys.from_file(settings.API_KEYS_FILE, settings.ENVIRONMENT)
        elif settings.accepts_development_key:
            keys = ApiKeys.development()
        oidc = None
        if settings.OIDC_ISSUER is not None:
            assert settings.OIDC_AUDIENCE is not None  # the settings refuse an issuer without an audience
            oidc = OidcVerifier(
                settings.OIDC_ISSUER,
                settings.OIDC_AUDIENCE,
                jwks_url=settings.OIDC_JWKS_URL,
                algorithms=settings.OIDC_ALGORITHMS,
                scopes_claim=settings.OIDC_SCOPES_CLAIM,
                scope_prefix=settings.OIDC_SCOPE_PREFIX,
            )
        return cls(keys, oidc)

    async def principal_for(self, credential: str) -> Principal:
        """Who ``credential`` speaks for; raises InvalidCredentials or AuthenticationUnavailable."""
        if ApiKeys.looks_like_key(credential):
            principal = self._keys.principal_for(credential) if self._keys is not None else None
            if principal is None:
                raise InvalidCredentials("the API key is not valid: unknown, revoked or mistyped")
            return principal
        if self._oidc is not None and credential.count(".") == 2:
            return await self._oidc.principal_for(credential)
        raise InvalidCredentials(
            "the credential is neither an API key of this gateway nor an OIDC token it accepts"
            if self._oidc is not None
            else "the credential is not an API key of this gateway (it accepts no OIDC tokens)"
        )

    async def sign_in(self, credential: str) -> SignIn:
        """:meth:`principal_for`, with what a session needs to keep checking the credential without holding it."""
        principal = await self.principal_for(credential)
        if principal.kind == "key":
            return SignIn(principal, None, key_digest(credential), API_KEY_METHOD)
        assert self._oidc is not None  # principal_for makes an OIDC principal only with a verifier
        # Verified just now, signature and all: reading exp unverified reads the verified claim.
        exp = jwt.decode(credential, options={"verify_signature": False}).get("exp")
        return SignIn(
            principal, int(exp) if isinstance(exp, int | float) else None, None, oidc_method(self._oidc.issuer)
        )

    def still_signed_in(self, principal: Principal, digest: str | None, method: str) -> Principal:
        """The principal a session signed in by ``method`` speaks for now.

        Refused (InvalidCredentials, saying why) when the gateway no longer
        signs in that way (API keys without a keys file, OIDC switched off or
        another issuer), when the method is not the principal's kind (a session
        the gateway did not make), and when its API key is revoked or reissued.
        An API key's principal comes from the keys file as it is now (its
        scopes too, so a narrowed key is narrowed at once). An OIDC
        principal stands until its token's expiry, which bounds its session.
        Raises AuthenticationUnavailable while the keys file is unusable.
        """
        if method == API_KEY_METHOD and principal.kind == "key":
            if self._keys is None:
                raise InvalidCredentials("this gateway no longer accepts API keys")
            current = (
                self._keys.current(principal.key_id, digest)
                if principal.key_id is not None and digest is not None
                else None
            )
            if current is None:
                raise InvalidCredentials("your API key is no longer valid (revoked or replaced)")
            return current
        if method.startswith(oidc_method("")) and principal.kind == "oidc":
            if self._oidc is None or method != oidc_method(self._oidc.issuer):
                raise InvalidCredentials("this gateway no longer accepts OIDC tokens of the issuer you signed in with")
            return principal
        raise InvalidCredentials("this session names a way of signing in that this gateway never offered")


def missing_credentials(authorization: str | None) -> Unauthenticated:
    if authorization:
        return Unauthenticated(
            "the Authorization header must use the Bearer scheme: 'Authorization: Bearer <API key or OIDC token>'"
        )
    return Unauthenticated("this request needs credentials: 'Authorization: Bearer <API key or OIDC token>'")


def challenge(error: AccessRefused) -> dict[str, str]:
    """The ``WWW-Authenticate`` header for a refusal (none for a 503)."""
    if isinstance(error, Unauthenticated):
        return {"WWW-Authenticate": f'Bearer realm="{REALM}"'}
    if isinstance(error, InvalidCredentials):
        description = _NOT_IN_DESCRIPTION.sub("", error.message)
        return {"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token", error_description="{description}"'}
    if isinstance(error, InsufficientScope):
        return {"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", scope="{error.scope}"'}
    return {}


def audit_fields(principal: Principal) -> dict[str, str]:
    """Who, in an audit log line: the principal and, for an API key, which key (its id; not a secret)."""
    fields = {"principal": principal.id}
    if principal.key_id is not None:
        fields["key_id"] = principal.key_id
    return fields


def audit_refusal(request: Request, error: PipelineError, principal: Principal | None, reason: str) -> None:
    """One line per refused request: who (if known), what, and why. Never the credential or the query."""
    fields = {"code": error.code, "reason": reason, "method": request.method, "path": request.url.path}
    if principal is not None:
        fields |= audit_fields(principal)
    logger.info("request refused", extra={"fields": fields})
