"""Container healthcheck: exit 0 when ``$HEALTHCHECK_URL`` answers 2xx, else 1 saying why.

Every Python image of the stack runs this (infra/docker/python-service.Dockerfile
sets the URL from its port). Images carry no curl, and some services do not
ship this project's shared library, so it needs only the standard library. The
image sets ``HEALTHCHECK_URL``; a container that moves its port overrides it.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

#: Short, so a hung service fails its check instead of stalling Docker's.
TIMEOUT_SECONDS = 3.0


def check(url: str) -> str | None:
    """None when ``url`` is healthy, else the reason it is not."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            if 200 <= response.status < 300:
                return None
            return f"{url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}: {exc.read(500).decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} unreachable: {exc}"


def main() -> int:
    url = os.environ.get("HEALTHCHECK_URL")
    if not url:
        print("HEALTHCHECK_URL is not set", file=sys.stderr)
        return 2
    problem = check(url)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
