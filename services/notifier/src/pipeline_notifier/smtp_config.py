"""Where the SMTP server is and how patiently to talk to it: plain values, checked when made.

Apart from :mod:`.smtp` (what a reply means for an email) and
:mod:`.smtp_pool` (the connections), which both read it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

Security = Literal["none", "starttls", "tls"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently one :func:`.smtp.deliver` call retries."""

    #: Attempts in total, the first included.
    max_attempts: int = 5
    #: The delay before the second attempt; it doubles for each one after.
    backoff_base_seconds: float = 0.5
    #: No delay is longer than this.
    backoff_cap_seconds: float = 10.0
    #: No retry starts this long after the first attempt did; None for no limit.
    deadline_seconds: float | None = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.backoff_base_seconds < 0 or self.backoff_cap_seconds < 0:
            raise ValueError("backoff seconds must not be negative")

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` failures.

        Exponential with "equal jitter": half fixed, half random, so notifier
        replicas that failed together do not all retry at the same instant.
        """
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** (failed_attempts - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how to reach the SMTP server."""

    host: str
    port: int
    #: ``none``: plain TCP (a local sink only); ``starttls``: upgrade a plain
    #: connection and fail if the server cannot; ``tls``: TLS from the first
    #: byte (SMTPS, usually port 465).
    security: Security = "starttls"
    #: Log in with these when both are set (empty counts as unset).
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Seconds any one network operation (a command, reading a reply) may take.
    timeout_seconds: float = 30.0
    #: Seconds to connect and read the greeting; ``timeout_seconds`` if None.
    connect_timeout_seconds: float | None = None
    #: A PEM bundle of extra CAs to trust for the server's certificate
    #: (a private CA); the system's CAs are trusted regardless.
    ca_file: str | None = None
    #: The name the notifier gives in EHLO; the machine's FQDN if None.
    local_hostname: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.security not in ("none", "starttls", "tls"):
            raise ValueError(f"security must be none, starttls or tls, got {self.security!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, got {self.port}")
        # Empty counts as unset: compose passes an unset variable as "".
        if bool(self.username) != bool(self.password):
            raise ValueError("give both username and password, or neither")
        if self.timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {self.timeout_seconds}")
