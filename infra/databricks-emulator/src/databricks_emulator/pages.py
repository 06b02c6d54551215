"""Paging of long arrays, as Jobs API 2.2 does it for one job or one run.

``jobs/get`` and ``runs/get`` under 2.2 answer with at most 100 elements of
each array property (a job's ``tasks``, ``job_clusters``, ``parameters``,
``environments``; a run's ``tasks``, ``job_clusters``, ``job_parameters``,
``repair_history``) and a ``next_page_token`` while any array has more. Every
page carries the other properties again; an array with nothing left is left
out of later pages (an empty array would not survive databricks-sdk's models,
which drop it), and the last page has no ``next_page_token``. databricks-sdk's
``get``/``get_run`` follow the tokens and join the pages themselves.

Tokens are opaque to clients, as a workspace's are; here they name the object
and the page, so a token used on another job or run is refused rather than
quietly serving someone else's page.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Final

from databricks_emulator.errors import invalid_parameter, not_modelled

#: Elements of one array property per page, in Jobs API 2.2.
PAGE_SIZE: Final = 100


def encode_token(kind: str, owner: int, position: int) -> str:
    raw = json.dumps([kind, owner, position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_token(token: str, kind: str, owner: int) -> int:
    """The position a token from ``encode_token(kind, owner, ...)`` names; the real 400 otherwise."""
    return read_token(token, (kind,), owner)[1]


def read_token(token: str, kinds: tuple[str, ...], owner: int) -> tuple[str, int]:
    """The kind (one of ``kinds``) and position of a token issued for ``owner``; the real 400 otherwise."""
    try:
        found_kind, found_owner, position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise invalid_parameter(f"Invalid page_token: {token!r}") from None
    if found_kind not in kinds or found_owner != owner or not isinstance(position, int) or position < 0:
        raise invalid_parameter(f"Invalid page_token: {token!r} was not issued for this request.")
    return found_kind, position


def whole_under_2_1(items: list[Any], what: str, version: str) -> None:
    """Jobs API 2.0/2.1 list at most 100 tasks; what they answer for more is not documented: 501."""
    if len(items) > PAGE_SIZE:
        raise not_modelled(
            f"{what} with more than {PAGE_SIZE} tasks under /api/{version}",
            f"Jobs API {version} lists at most {PAGE_SIZE} and documents no answer for more; "
            "/api/2.2 pages them (databricks-sdk uses 2.2)",
        )


def page(
    document: dict[str, Any], arrays: tuple[str, ...], number: int, *, inside: str | None = None
) -> tuple[dict[str, Any], bool]:
    """Page ``number`` (0 first) of ``document``: each array cut to its slice; True if more follow.

    ``inside`` names a nested object holding the arrays (a job's ``settings``).
    """
    paged = dict(document)
    holder = dict(paged[inside]) if inside else paged
    start, end = number * PAGE_SIZE, (number + 1) * PAGE_SIZE
    more = False
    for name in arrays:
        items = holder.get(name)
        if items is None:
            continue
        chunk = items[start:end]
        more = more or len(items) > end
        if chunk:
            holder[name] = chunk
        else:
            del holder[name]
    if inside:
        paged[inside] = holder
    return paged, more
