"""Where the pipeline notebook may read its ``source`` from, checked where it reads.

The gateway refuses a ``source`` outside the catalogue's rule, but a run can be
started without the gateway (anyone holding a Jobs API token can call
``run-now``), so the notebook holds the same rule itself and applies it at the
last moment, where a file is opened or a connection made:

- a path must lie under one of the listed folders once every ``..`` and
  symbolic link is resolved; ``dbfs:/x`` is the driver's ``/dbfs/x`` and is
  judged as that path; ``file:`` URLs and every other scheme are refused;
- a URL must be of a listed scheme (https unless more are listed) and name a
  listed host, and every address that host *resolves to* must be a public
  one: loopback, link-local (169.254.0.0/16 with the cloud metadata address,
  fe80::/10), private, unique-local, shared (100.64.0.0/10), multicast,
  reserved and unspecified addresses are refused unless a listed network
  holds them. The connection goes to the address that was checked, so a
  name that resolves elsewhere a moment later (DNS rebinding) changes
  nothing; TLS still verifies the host's name. A redirect is refused rather
  than followed: its target was never checked.

The rule comes from ``pipeline_sources.json`` beside this module, deployed
with the bundle (a workspace file a ``run-now`` caller cannot change), or from
the JSON file the driver's ``PIPELINE_SOURCES_FILE`` environment variable
names (the cluster's configuration, equally out of a caller's reach). Job
parameters never carry it.

Standard library only, as every module the notebooks import.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

#: The operator's rule, deployed beside this module.
POLICY_FILE = Path(__file__).with_name("pipeline_sources.json")
#: The driver's environment variable naming another rule file.
POLICY_FILE_VARIABLE = "PIPELINE_SOURCES_FILE"
#: IPv6's private addresses (RFC 4193), named apart so a refusal says which.
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
#: Where Databricks mounts DBFS on the driver.
DBFS_MOUNT = "/dbfs/"


class SourceRefused(ValueError):
    """The source is outside what the operator allows; nothing was read or connected to."""


@dataclass(frozen=True)
class SourcePolicy:
    """What a ``source`` may name."""

    #: URL schemes allowed (of "https", "http").
    schemes: tuple[str, ...] = ("https",)
    #: Host names a URL may name, exactly (lower case).
    hosts: tuple[str, ...] = ()
    #: Folders a path may be under (absolute, ending in "/").
    path_prefixes: tuple[str, ...] = ()
    #: Networks whose addresses are allowed although they are not public (e.g. a private data host).
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_json(cls, text: str) -> SourcePolicy:
        document = json.loads(text)
        unknown = sorted(set(document) - {"schemes", "hosts", "path_prefixes", "networks", "comment"})
        if unknown:
            raise ValueError(f"source policy: unknown keys {', '.join(unknown)}")
        prefixes = tuple(document.get("path_prefixes", ()))
        if any(not prefix.startswith("/") or not prefix.endswith("/") for prefix in prefixes):
            raise ValueError("source policy: every path prefix is absolute and ends with '/'")
        return cls(
            schemes=tuple(scheme.lower() for scheme in document.get("schemes", ("https",))),
            hosts=tuple(host.lower().rstrip(".") for host in document.get("hosts", ())),
            path_prefixes=prefixes,
            networks=tuple(ipaddress.ip_network(network) for network in document.get("networks", ())),
        )


def load_policy(environ: dict[str, str] | None = None) -> SourcePolicy:
    """The operator's rule: the file the driver's environment names, else the one beside this module."""
    environ = os.environ if environ is None else environ
    path = Path(environ.get(POLICY_FILE_VARIABLE) or POLICY_FILE)
    return SourcePolicy.from_json(path.read_text(encoding="utf-8"))


def _listed(values: tuple[object, ...]) -> str:
    return ", ".join(map(str, values)) if values else "none listed"


def checked_path(policy: SourcePolicy, source: str) -> str:
    """The real path ``source`` names, once resolved; SourceRefused if it is not under a listed folder."""
    if "\x00" in source:
        raise SourceRefused("source holds a NUL character")
    if not source.startswith("/"):
        raise SourceRefused(f"source {source!r} is not an absolute path")
    # realpath resolves '..' and every symbolic link, so neither climbs out of a folder.
    real = os.path.realpath(source)
    for prefix in policy.path_prefixes:
        folder = os.path.realpath(prefix)
        if real.startswith(folder.rstrip("/") + "/"):
            return real
    raise SourceRefused(f"source {source!r} is not under an allowed folder ({_listed(policy.path_prefixes)})")


def address_refusal(policy: SourcePolicy, address: str) -> str | None:
    """Why ``address`` may not be connected to, or None for a public (or listed) address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(ip in network for network in policy.networks if network.version == ip.version):
        return None
    if ip in UNIQUE_LOCAL:
        return f"{ip} is a unique-local address"
    # Most specific first: 0.0.0.0, 127/8 and 240/4 count as private too.
    for kind in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return f"{ip} is a {kind.replace('_', '-')} address"
    if not ip.is_global:  # e.g. 100.64.0.0/10, shared by carriers and clouds
        return f"{ip} is not a public address"
    return None


@dataclass(frozen=True)
class CheckedUrl:
    """A URL the policy allows, and the address to connect to for it."""

    parts: urllib.parse.SplitResult
    host: str
    port: int
    address: str


def checked_url(policy: SourcePolicy, source: str, resolve=socket.getaddrinfo) -> CheckedUrl:  # type: ignore[no-untyped-def]
    """``source`` checked against the policy, with the address it resolved to; SourceRefused if not allowed.

    ``resolve`` is ``socket.getaddrinfo`` or a stand-in with its signature (tests).
    Every address the name resolves to must be allowed, so the connection cannot
    be steered to a refused one among them.
    """
    parts = urllib.parse.urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        raise SourceRefused(f"source {source!r}: scheme {scheme!r} is not allowed ({_listed(policy.schemes)})")
    if "@" in parts.netloc:
        raise SourceRefused(f"source {source!r}: credentials before the host (user@host) are refused")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise SourceRefused(f"source {source!r} is not a URL: {exc}") from None
    host = (host or "").rstrip(".")
    if host not in policy.hosts:
        raise SourceRefused(f"source {source!r}: host {host!r} is not allowed ({_listed(policy.hosts)})")
    port = port or (443 if scheme == "https" else 80)
    try:
        answers = resolve(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SourceRefused(f"source {source!r}: host {host!r} does not resolve: {exc}") from None
    addresses = list(dict.fromkeys(answer[4][0] for answer in answers))
    if not addresses:
        raise SourceRefused(f"source {source!r}: host {host!r} resolves to no address")
    for address in addresses:
        refusal = address_refusal(policy, address)
        if refusal is not None:
            raise SourceRefused(f"source {source!r}: host {host!r} resolves to {refusal}, which is refused")
    return CheckedUrl(parts, host, port, addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to the address that was checked, whatever the name resolves to now."""

    def __init__(self, checked: CheckedUrl, timeout: float) -> None:
        super().__init__(checked.host, checked.port, timeout=timeout)
        self._address = checked.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As :class:`_PinnedHTTPConnection`, with TLS verifying the host's name (not the address)."""

    def __init__(self, checked: CheckedUrl, timeout: float, context: ssl.SSLContext | None = None) -> None:
        super().__init__(checked.host, checked.port, timeout=timeout)
        self._address = checked.address
        self._tls = context or ssl.create_default_context()

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def fetch(checked: CheckedUrl, max_bytes: int, timeout: float, context: ssl.SSLContext | None = None) -> bytes:
    """GET the checked URL from its checked address: at most ``max_bytes + 1`` bytes; a redirect is refused.

    ``context``: the TLS settings (default: the system's trusted authorities, names verified).
    """
    if checked.parts.scheme.lower() == "https":
        connection: http.client.HTTPConnection = _PinnedHTTPSConnection(checked, timeout, context)
    else:
        connection = _PinnedHTTPConnection(checked, timeout)
    target = urllib.parse.urlunsplit(("", "", checked.parts.path or "/", checked.parts.query, ""))
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        if 300 <= response.status < 400:
            raise SourceRefused(
                f"source {urllib.parse.urlunsplit(checked.parts)} answered a redirect (HTTP {response.status}); "
                "redirects are not followed: give the final URL"
            )
        if response.status != 200:
            raise OSError(f"source {urllib.parse.urlunsplit(checked.parts)} answered HTTP {response.status}")
        return response.read(max_bytes + 1)
    finally:
        connection.close()


def read_source(source: str, policy: SourcePolicy, max_bytes: int, timeout: float) -> bytes:
    """The bytes at ``source`` (at most ``max_bytes + 1``), if the policy allows it; SourceRefused if not."""
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme == "dbfs":
        return read_source(DBFS_MOUNT + source[len("dbfs:") :].lstrip("/"), policy, max_bytes, timeout)
    if scheme in ("http", "https"):
        return fetch(checked_url(policy, source), max_bytes, timeout)
    if scheme:
        raise SourceRefused(f"source {source!r}: a {scheme}: URL is refused; give a listed folder's path or URL")
    with open(checked_path(policy, source), "rb") as handle:
        return handle.read(max_bytes + 1)


def read_text(source: str, policy: SourcePolicy, max_bytes: int, timeout: float) -> str:
    """The text (UTF-8, a byte-order mark dropped) at ``source``, if the policy allows it and it fits ``max_bytes``."""
    raw = read_source(source, policy, max_bytes, timeout)
    if len(raw) > max_bytes:
        raise ValueError(f"source {source} is larger than {max_bytes} bytes")
    return raw.decode("utf-8-sig")
