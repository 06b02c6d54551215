"""OAuth machine-to-machine sign-in, as a workspace offers it to a service principal.

databricks-sdk's unified authentication with ``client_id``/``client_secret``
(auth type ``oauth-m2m``) does three things, all served here:

1. ``GET /.well-known/databricks-config``: host metadata; its
   ``oidc_endpoint`` is where OAuth discovery starts. (The SDK asks whatever
   its credentials, and stalls for minutes when nothing answers.)
2. ``GET {oidc_endpoint}/.well-known/oauth-authorization-server``: the
   authorization and token endpoints.
3. ``POST /oidc/v1/token``: ``grant_type=client_credentials&scope=all-apis``
   as a form, the client id and secret in a Basic ``Authorization`` header
   (``client_id``/``client_secret`` form fields are taken too, as OAuth
   allows). The answer is ``{access_token, token_type: Bearer, expires_in,
   scope}``; errors have OAuth's shape ``{error, error_description}``
   (RFC 6749 section 5.2), e.g. ``invalid_client`` / "Client authentication
   failed" as a workspace words it.

Discovery answers with the URL the client used, not ``PUBLIC_URL``: a worker
reaching the emulator as ``http://databricks:8080`` must be sent to a token
endpoint it can reach, whatever a browser would use for run pages.

Tokens are opaque random strings (a workspace issues JWTs; no client here
reads their claims) and are refused once ``expires_in`` has passed, with the
same 403 "Invalid access token." a workspace gives for an expired one. They
live in memory, like runs.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from databricks_emulator.errors import not_modelled

#: The one scope a service principal's token gets here (and what the SDK asks for).
SCOPE = "all-apis"
GRANT_TYPE = "client_credentials"
#: OAuth token answers must not be cached (RFC 6749 section 5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenIssuer:
    """The service principal's credentials, and the access tokens issued for them."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        lifetime_seconds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self._secret = client_secret
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self.issued = 0

    def client_is(self, client_id: str, client_secret: str) -> bool:
        # Both compared, always, so a wrong id takes as long as a wrong secret.
        id_ok = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), self._secret.encode())
        return id_ok and secret_ok

    def issue(self) -> str:
        now = self._clock()
        self._expiry = {token: at for token, at in self._expiry.items() if at > now}
        token = f"emulator-oauth-{secrets.token_urlsafe(32)}"
        self._expiry[token] = now + self.lifetime_seconds
        self.issued += 1
        return token

    def is_live(self, token: str) -> bool:
        expires_at = self._expiry.get(token)
        return expires_at is not None and self._clock() < expires_at

    def live(self) -> int:
        now = self._clock()
        return sum(1 for at in self._expiry.values() if at > now)

    def expire_all(self) -> int:
        """End every live token now, as if its lifetime had passed (control API)."""
        now = self._clock()
        ended = 0
        for token, at in self._expiry.items():
            if at > now:
                self._expiry[token] = now
                ended += 1
        return ended


def _issuer(request: Request) -> TokenIssuer:
    return request.app.state.tokens


IssuerDep = Annotated[TokenIssuer, Depends(_issuer)]


def oauth_error(status: int, error: str, description: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={**NO_STORE, **headers},
    )


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` from a Basic header, or None if it is not one."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    # RFC 6749 section 2.3.1: both are form-encoded before they are joined.
    return unquote(client_id), unquote(secret)


def base_url(request: Request) -> str:
    """The URL this client reached the emulator at, without a trailing slash."""
    return str(request.base_url).rstrip("/")


discovery = APIRouter()


@discovery.get("/.well-known/databricks-config")
async def host_metadata(request: Request) -> dict[str, Any]:
    return {
        "oidc_endpoint": f"{base_url(request)}/oidc",
        "workspace_id": request.app.state.workspace.settings.WORKSPACE_ID,
    }


@discovery.get("/oidc/.well-known/oauth-authorization-server")
async def authorization_server(request: Request) -> dict[str, Any]:
    # Only what databricks-sdk's OidcEndpoints model reads (and Databricks' own
    # CLI test server serves); a workspace's document has more.
    oidc = f"{base_url(request)}/oidc"
    return {"authorization_endpoint": f"{oidc}/v1/authorize", "token_endpoint": f"{oidc}/v1/token"}


@discovery.get("/oidc/v1/authorize")
async def authorize() -> None:
    raise not_modelled(
        "GET /oidc/v1/authorize", "only machine-to-machine OAuth (client_credentials) is modelled, not U2M"
    )


@discovery.post("/oidc/v1/token")
async def token(request: Request, issuer: IssuerDep) -> JSONResponse:
    try:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        return oauth_error(400, "invalid_request", "The request body is not a UTF-8 form.")
    basic = _basic_credentials(request.headers.get("authorization", ""))
    in_form = "client_id" in form or "client_secret" in form
    if basic is not None and in_form:
        return oauth_error(
            400, "invalid_request", "Client credentials were sent both in the Authorization header and the form."
        )
    client_id, client_secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
    if not issuer.client_is(client_id, client_secret):
        challenge = {"WWW-Authenticate": 'Basic realm="oidc"'} if basic is not None else {}
        return oauth_error(401, "invalid_client", "Client authentication failed", **challenge)
    grant_type = form.get("grant_type")
    if not grant_type:
        return oauth_error(400, "invalid_request", "Missing form parameter: grant_type")
    if grant_type != GRANT_TYPE:
        return oauth_error(
            400,
            "unsupported_grant_type",
            f"Unsupported grant_type {grant_type!r}; the emulator issues tokens for {GRANT_TYPE} only.",
        )
    scopes = set(form.get("scope", SCOPE).split())
    if scopes != {SCOPE}:
        other = ", ".join(sorted(scopes - {SCOPE})) or "(none)"
        return oauth_error(
            400, "invalid_scope", f"The Databricks emulator issues {SCOPE} tokens only; not modelled: {other}."
        )
    return JSONResponse(
        {
            "access_token": issuer.issue(),
            "token_type": "Bearer",
            "expires_in": issuer.lifetime_seconds,
            "scope": SCOPE,
        },
        headers=NO_STORE,
    )
