"""A signed POST, for the test bundle's notebooks: a module next to them, imported by name.

The emulator's harness puts a notebook's folder first on ``sys.path``, as a
workspace does for workspace files, so ``import callback`` works from
``csv_shape.py``. Standard library only: notebooks run without site-packages.
"""

import base64
import hashlib
import hmac
import json
import time
import urllib.request
import uuid


def post_signed(url, signing_key, payload):
    """POST ``payload`` with Standard Webhooks headers keyed by the ``whsec_`` key; the HTTP status."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    message_id, now = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    secret = base64.b64decode(signing_key.removeprefix("whsec_"))
    digest = hmac.new(secret, f"{message_id}.{now}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": now,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status
