"""Container healthcheck: ``python -m pipeline_shared.healthcheck URL``.

Exits 0 when ``URL`` answers 2xx within the timeout, 1 otherwise, printing why.
Images carry no curl; this needs only the standard library, so every Python
image in the stack can use it.
"""

from __future__ import annotations

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


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m pipeline_shared.healthcheck URL", file=sys.stderr)
        return 2
    problem = check(argv[1])
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
