"""An OIDC issuer the tests run themselves, on loopback: discovery, a key set, and tokens.

Its keys are generated here, per test session. It publishes an RSA and an EC
key; a third key (``rogue``) is never published, for tokens signed by someone
else. It counts the requests it serves, so tests can tell what the gateway
fetched and when.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "pipelines-gateway"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.url = ""
        self.requests: list[str] = []
        #: What the discovery document says the issuer is; a test may make it lie.
        self.claimed_issuer: str | None = None
        self.published = {"rsa-1": (self.rsa, RSAAlgorithm, "RS256"), "ec-1": (self.ec, ECAlgorithm, "ES256")}

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, (key, algorithm, alg) in self.published.items():
            jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
            keys.append(jwk | {"kid": kid, "alg": alg, "use": "sig"})
        return {"keys": keys}

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.claimed_issuer or self.url, "jwks_uri": f"{self.url}/jwks.json"}

    def fetches(self, path: str) -> int:
        return self.requests.count(path)

    def claims(self, sub: str = "carol", scope: str | list[str] = "start read cancel", **overrides: Any) -> dict:
        now = int(time.time())
        claims = {"iss": self.url, "aud": AUDIENCE, "sub": sub, "iat": now, "nbf": now, "exp": now + 300}
        claims["scope" if isinstance(scope, str) else "scp"] = scope
        return {name: value for name, value in (claims | overrides).items() if value is not None}

    def token(self, *, kid: str = "rsa-1", key: Any = None, alg: str | None = None, **claims: Any) -> str:
        """A token signed with the published key ``kid`` (or ``key``, under that kid)."""
        signing_key, _, default_alg = self.published.get(kid, (self.rogue, RSAAlgorithm, "RS256"))
        return jwt.encode(self.claims(**claims), key or signing_key, algorithm=alg or default_alg, headers={"kid": kid})

    def unsigned_token(self, **claims: Any) -> str:
        """alg=none: no signature at all."""
        header = _b64(json.dumps({"alg": "none", "kid": "rsa-1", "typ": "JWT"}).encode())
        return f"{header}.{_b64(json.dumps(self.claims(**claims)).encode())}."

    def hmac_with_public_key_token(self, **claims: Any) -> str:
        """HS256 keyed with the issuer's public RSA key: the old algorithm-confusion forgery."""
        public_pem = self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = _b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(self.claims(**claims)).encode())
        signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(signature)}"


@contextmanager
def serve_issuer() -> Iterator[Issuer]:
    issuer = Issuer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.requests.append(self.path)
            documents = {"/.well-known/openid-configuration": issuer.discovery, "/jwks.json": issuer.jwks}
            if self.path not in documents:
                self.send_error(404)
                return
            body = json.dumps(documents[self.path]()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="oidc-issuer", daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
