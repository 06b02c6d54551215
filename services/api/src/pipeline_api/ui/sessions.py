"""The web page's sessions and its defences against cross-site requests.

A session is a cookie the gateway signed (itsdangerous, the library
Starlette's own sessions sign with; keyed by ``UI_SESSION_SECRET``). It holds
a random session id, who signed in (principal kind, name, scopes, API key id)
and how (:attr:`Session.method`: an API key, or OIDC tokens of one issuer),
the API key's digest as the keys file lists it (never the key: a digest is no
way in), when it expires (:data:`SESSION_SECONDS` after sign-in, or an OIDC
token's ``exp`` if that is sooner) and the session's CSRF token. It is
signed, not encrypted: nothing in it is secret from the person holding it.

A session ends when it expires; when the person signs out (its id is
recorded on the server, :mod:`.sign_outs`, so a copy of the cookie is refused
by every replica afterwards); when the way it was signed in is no longer
configured, or its API key leaves the keys file (both checked on every
request, see :meth:`Authenticator.still_signed_in`); or when the secret
changes (everybody).

Cross-site requests are refused three ways, any one of which suffices in a
browser that implements it: the cookie is ``SameSite=Lax`` (a cross-site POST
carries no session), every state-changing request must carry the session's
CSRF token (a hidden form field, or the ``X-CSRF-Token`` header htmx sends),
compared in constant time, and a request whose ``Sec-Fetch-Site`` or
``Origin`` says it came from another site is refused before anything else.
Sign-in has no session yet: its form carries a token that a short-lived
signed cookie of its own must match (login CSRF: no other site can sign a
visitor in as someone else).

What this module must not do: look at credentials (that is the
Authenticator's) or decide what a principal may do (that is the Principal's).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from ..auth.authenticator import SignIn
from ..auth.principals import Principal, Scope

#: The session cookie; scoped to the page's path, so the JSON API never sees it.
SESSION_COOKIE = "pipelines_ui_session"
#: The sign-in form's own cookie (login CSRF), set when the form is shown.
SIGN_IN_COOKIE = "pipelines_ui_sign_in"
COOKIE_PATH = "/ui"
#: A working day: long enough not to interrupt one, short enough that a
#: forgotten browser does not stay signed in for the week.
SESSION_SECONDS = 8 * 3600
#: A session id's randomness: 128 bits, never guessed or repeated.
SESSION_ID_BYTES = 16
#: How long a sign-in form may stay open before it must be reloaded.
SIGN_IN_FORM_SECONDS = 3600
#: The header htmx sends the CSRF token in (hx-headers on <body>); forms send CSRF_FIELD.
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
#: ``Sec-Fetch-Site`` values of requests this page makes itself (``none``: typed or bookmarked).
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})


@dataclass(frozen=True)
class Session:
    #: Random; what a sign-out records (:mod:`.sign_outs`).
    session_id: str
    principal: Principal
    #: How it was signed in (:attr:`SignIn.method`), re-checked against what the gateway accepts now.
    method: str
    #: Seconds since the epoch.
    expires_at: int
    csrf_token: str
    #: The API key's digest, for re-checking it against the keys file; None for OIDC.
    key_digest: str | None


#: What the session cookie's signature is salted with, apart from the sign-in form's token.
SESSION_SALT = "pipelines-ui-session"
SIGN_IN_SALT = "pipelines-ui-sign-in"


class SessionCookies:
    """Issues and reads the signed cookies; the clock is a seam for tests."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._sessions = URLSafeTimedSerializer(secret, salt=SESSION_SALT)
        self._sign_ins = URLSafeTimedSerializer(secret, salt=SIGN_IN_SALT)
        self._clock = clock

    def new_session(self, signed_in: SignIn) -> Session:
        now = int(self._clock())
        expires = now + SESSION_SECONDS
        if signed_in.expires_at is not None:
            expires = min(expires, signed_in.expires_at)
        return Session(
            secrets.token_urlsafe(SESSION_ID_BYTES),
            signed_in.principal,
            signed_in.method,
            expires,
            secrets.token_urlsafe(32),
            signed_in.key_digest,
        )

    def dump(self, session: Session) -> str:
        principal = session.principal
        return self._sessions.dumps(
            {
                "sid": session.session_id,
                "method": session.method,
                "kind": principal.kind,
                "name": principal.name,
                "scopes": sorted(principal.scopes),
                "key_id": principal.key_id,
                "key_digest": session.key_digest,
                "expires_at": session.expires_at,
                "csrf": session.csrf_token,
            }
        )

    def load(self, cookie: str | None) -> Session | None:
        """The session the cookie holds, or None: absent, forged, tampered with, expired or of an older format."""
        if not cookie:
            return None
        try:
            data = self._sessions.loads(cookie, max_age=SESSION_SECONDS)
            principal = Principal(
                data["kind"],
                data["name"],
                frozenset(Scope(scope) for scope in data["scopes"]),
                key_id=data["key_id"],
            )
            session = Session(
                str(data["sid"]),
                principal,
                str(data["method"]),
                int(data["expires_at"]),
                str(data["csrf"]),
                data["key_digest"],
            )
        except (BadSignature, KeyError, TypeError, ValueError):
            return None
        if session.expires_at <= self._clock() or principal.kind not in ("key", "oidc"):
            return None
        return session

    def new_sign_in_token(self) -> tuple[str, str]:
        """(token for the form, cookie value carrying it)."""
        token = secrets.token_urlsafe(32)
        return token, self._sign_ins.dumps(token)

    def sign_in_token_matches(self, cookie: str | None, sent: str | None) -> bool:
        if not cookie or not sent:
            return False
        try:
            expected = self._sign_ins.loads(cookie, max_age=SIGN_IN_FORM_SECONDS)
        except BadSignature:
            return False
        return isinstance(expected, str) and hmac.compare_digest(expected.encode(), sent.encode())


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    """HttpOnly, SameSite=Lax, on the page's path; Secure whenever the page is served over TLS."""
    response.set_cookie(
        name,
        value,
        max_age=max(max_age, 0),
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="lax", secure=request.url.scheme == "https")


def cross_site_problem(request: Request) -> str | None:
    """Why this request looks like it came from another site, or None.

    Only what the browser says is used, and only when it says it: a client
    without these headers (curl) is judged by its CSRF token alone.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in SAME_SITE_FETCHES:
        return f"the request came from another site (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin is not None and origin != own:
        return f"the request came from another origin ({origin[:100]}), not from this page ({own})"
    return None


def csrf_problem(session: Session, sent: str | None) -> str | None:
    """Why ``sent`` is not this session's CSRF token, or None."""
    if not sent:
        return "the request carried no CSRF token (the page's forms send one; reload the page and try again)"
    if not hmac.compare_digest(session.csrf_token.encode(), sent.encode()):
        return "the request's CSRF token is not this session's (reload the page and try again)"
    return None
