"""Session cookies made by someone who knows the page's signing secret (the development one is public)."""

from __future__ import annotations

import time
from typing import Any

from itsdangerous import URLSafeTimedSerializer

from pipeline_api.ui.sessions import SESSION_SALT


def forged_session(secret: str, **document: Any) -> str:
    """A session cookie for an admin OIDC principal, signed with ``secret`` as the gateway signs its own.

    ``document`` overrides or adds fields (``sid``, ``method``...), so each test says what its forgery claims.
    """
    serializer = URLSafeTimedSerializer(secret, salt=SESSION_SALT)
    return serializer.dumps(
        {
            "kind": "oidc",
            "name": "mallory",
            "scopes": ["admin"],
            "key_id": None,
            "key_digest": None,
            "expires_at": int(time.time()) + 3600,
            "csrf": "forged-csrf",
        }
        | document
    )
