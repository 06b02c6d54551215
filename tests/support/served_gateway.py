"""A real gateway in process, served on a loopback socket, as the client's tests reach it."""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.pipeline_harness import Harness


@dataclass
class ServedGateway:
    url: str
    key: str
    harness: Harness
