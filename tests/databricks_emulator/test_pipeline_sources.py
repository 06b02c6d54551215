"""The pipeline notebook's own rule for ``source`` (notebooks/pipeline_sources.py), which holds without the gateway.

Nothing here connects to an address the rule refuses: those are checked
through the rule, with a stand-in for the resolver. The only connections go
to a receiver on 127.0.0.1, under a rule that lists it, or are refused before
they are made (the receiver then shows no request).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from tests.support.callback_receiver import CallbackReceiver
from tests.support.emulator_runs import import_notebook_module

sources = import_notebook_module("pipeline_sources")

#: The rule deployed with the notebooks (pipeline_sources.json).
DEPLOYED = sources.load_policy({})
#: A rule that lists one https host.
LISTED = sources.SourcePolicy(hosts=("data.example.com",), path_prefixes=("/Workspace/Shared/pipelines/",))
#: A rule that lets the notebook read the loopback receiver (tests only).
LOOPBACK = sources.SourcePolicy(
    schemes=("http",), hosts=("127.0.0.1", "data.example.test"), networks=(ipaddress.ip_network("127.0.0.0/8"),)
)


def resolving_to(*addresses: str):  # type: ignore[no-untyped-def]
    """A stand-in for socket.getaddrinfo that answers ``addresses`` for any name."""

    def resolve(host: str, port: int, type: int = 0) -> list[tuple]:
        family = socket.AF_INET6 if ":" in addresses[0] else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses]

    return resolve


def never_resolve(host: str, port: int, type: int = 0) -> list[tuple]:
    raise AssertionError(f"{host} was resolved; the rule should have refused it first")


def test_the_deployed_rule_is_the_development_stacks() -> None:
    assert (DEPLOYED.schemes, DEPLOYED.hosts, DEPLOYED.path_prefixes, DEPLOYED.networks) == (
        ("https",),
        (),
        ("/Workspace/Shared/pipelines/",),
        (),
    )


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.0.1", "private"),
        ("fd12:3456::1", "unique-local"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not a public address"),
        ("192.0.2.10", "private"),
    ],
)
def test_a_listed_host_that_resolves_to_a_refused_address_is_refused(address: str, kind: str) -> None:
    with pytest.raises(sources.SourceRefused, match=f"resolves to .*{kind}"):
        sources.checked_url(LISTED, "https://data.example.com/a.csv", resolve=resolving_to(address))


def test_one_refused_address_among_public_ones_refuses_the_host() -> None:
    with pytest.raises(sources.SourceRefused, match=re.escape("169.254.169.254 is a link-local address")):
        sources.checked_url(
            LISTED, "https://data.example.com/a.csv", resolve=resolving_to("93.184.216.34", "169.254.169.254")
        )


def test_a_listed_host_with_public_addresses_is_allowed_and_pinned_to_the_first() -> None:
    checked = sources.checked_url(
        LISTED, "https://data.example.com/a.csv?x=1", resolve=resolving_to("93.184.216.34", "2606:2800:220:1::1")
    )
    assert (checked.host, checked.port, checked.address) == ("data.example.com", 443, "93.184.216.34")


def test_a_listed_network_allows_its_private_addresses() -> None:
    policy = sources.SourcePolicy(hosts=("data.internal",), networks=(ipaddress.ip_network("10.20.0.0/16"),))
    assert sources.checked_url(policy, "https://data.internal/a.csv", resolve=resolving_to("10.20.1.1")).address
    with pytest.raises(sources.SourceRefused, match=re.escape("10.21.0.1 is a private address")):
        sources.checked_url(policy, "https://data.internal/a.csv", resolve=resolving_to("10.21.0.1"))


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("http://127.0.0.1:8080/emulator/runs?pipeline_id=x", "scheme 'http' is not allowed"),
        ("http://169.254.169.254/latest/meta-data/", "scheme 'http' is not allowed"),
        ("https://169.254.169.254/latest/meta-data/", "host '169.254.169.254' is not allowed"),
        ("https://localhost/a.csv", "host 'localhost' is not allowed"),
        ("https://example.com/a.csv", "host 'example.com' is not allowed (none listed)"),
        ("https://u:p@example.com/a.csv", "credentials"),
        ("ftp://example.com/a.csv", "scheme 'ftp' is not allowed"),
    ],
)
def test_the_deployed_rule_refuses_before_resolving(source: str, says: str) -> None:
    with pytest.raises(sources.SourceRefused, match=re.escape(says)):
        sources.checked_url(DEPLOYED, source, resolve=never_resolve)


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("/etc/passwd", "not under an allowed folder"),
        ("/proc/self/environ", "not under an allowed folder"),
        ("/Workspace/Shared/pipelines/../../../etc/passwd", "not under an allowed folder"),
        ("/Workspace/Shared/pipelinesX/a.csv", "not under an allowed folder"),
        ("file:///etc/passwd", "a file: URL is refused"),
        ("file:///Workspace/Shared/pipelines/samples/customers.csv", "a file: URL is refused"),
        ("dbfs:/FileStore/a.csv", "'/dbfs/FileStore/a.csv' is not under an allowed folder"),
        ("samples/customers.csv", "not an absolute path"),
        ("C:/Windows/win.ini", "a c: URL is refused"),
        ("/Workspace/Shared/pipelines/a\x00.csv", "NUL"),
    ],
)
def test_the_deployed_rule_refuses_files_outside_its_folder(source: str, says: str) -> None:
    with pytest.raises(sources.SourceRefused, match=re.escape(says)):
        sources.read_source(source, DEPLOYED, max_bytes=100, timeout=1)


def test_a_path_may_not_leave_its_folder_by_dots_or_by_a_link(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "ok.csv").write_text("a,b\n1,2\n")
    (outside / "secret.csv").write_text("s\n")
    (allowed / "link.csv").symlink_to(outside / "secret.csv")
    policy = sources.SourcePolicy(path_prefixes=(f"{allowed}/",))

    assert sources.read_source(f"{allowed}/ok.csv", policy, max_bytes=100, timeout=1) == b"a,b\n1,2\n"
    for escape in (f"{allowed}/../outside/secret.csv", f"{allowed}/link.csv"):
        with pytest.raises(sources.SourceRefused, match="not under an allowed folder"):
            sources.read_source(escape, policy, max_bytes=100, timeout=1)


def test_a_refused_url_is_never_fetched() -> None:
    with CallbackReceiver() as receiver:
        receiver.files["/data.csv"] = b"a\n1\n"
        with pytest.raises(sources.SourceRefused):
            sources.read_source(f"{receiver.url}/data.csv", DEPLOYED, max_bytes=100, timeout=5)
        assert receiver.fetched == [], "nothing was sent"


def test_a_listed_url_is_read_from_the_address_that_was_checked() -> None:
    with CallbackReceiver() as receiver:
        receiver.files["/data.csv"] = b"a\n1\n"
        port = int(receiver.url.rsplit(":", 1)[1])
        # The name does not resolve in DNS: only the checked (stand-in) answer says where it is.
        checked = sources.checked_url(
            LOOPBACK, f"http://data.example.test:{port}/data.csv", resolve=resolving_to("127.0.0.1")
        )
        assert sources.fetch(checked, max_bytes=100, timeout=5) == b"a\n1\n"
        assert receiver.fetched == ["/data.csv"]


def test_a_redirect_is_refused_not_followed() -> None:
    with CallbackReceiver() as receiver:
        receiver.redirects["/moved.csv"] = "http://169.254.169.254/latest/meta-data/"
        with pytest.raises(sources.SourceRefused, match="redirects are not followed"):
            sources.read_source(f"{receiver.url}/moved.csv", LOOPBACK, max_bytes=100, timeout=5)
        assert receiver.fetched == ["/moved.csv"], "only the checked URL was asked"


def test_the_rule_comes_from_the_drivers_environment_when_it_names_a_file(tmp_path: Path) -> None:
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"schemes": ["https"], "hosts": ["Data.Example.com."], "path_prefixes": ["/data/"]}))
    policy = sources.load_policy({sources.POLICY_FILE_VARIABLE: str(rule)})
    assert (policy.hosts, policy.path_prefixes) == (("data.example.com",), ("/data/",))
    rule.write_text(json.dumps({"path_prefixes": ["/data"]}))
    with pytest.raises(ValueError, match="ends with '/'"):
        sources.load_policy({sources.POLICY_FILE_VARIABLE: str(rule)})
    assert sources.load_policy({}) == DEPLOYED, "unset: the file beside the module"
    assert os.environ.get(sources.POLICY_FILE_VARIABLE) is None


@pytest.fixture
def tls_server() -> Iterator[tuple[int, ssl.SSLContext]]:
    """An https server on 127.0.0.1 whose certificate names data.example.test, and a context trusting it."""
    authority = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("data.example.test").configure_cert(served)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"host\n{self.headers['Host']}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = served.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    try:
        yield server.server_address[1], trusting
    finally:
        server.shutdown()
        server.server_close()


def test_https_goes_to_the_checked_address_and_verifies_the_hosts_name(tls_server) -> None:  # type: ignore[no-untyped-def]
    port, trusting = tls_server
    policy = sources.SourcePolicy(hosts=("data.example.test", "other.example.test"), networks=LOOPBACK.networks)
    checked = sources.checked_url(policy, f"https://data.example.test:{port}/a.csv", resolve=resolving_to("127.0.0.1"))

    assert (
        sources.fetch(checked, max_bytes=100, timeout=5, context=trusting)
        == f"host\ndata.example.test:{port}\n".encode()
    )

    # The same address under another name: the certificate does not name it, so nothing is read.
    other = sources.checked_url(policy, f"https://other.example.test:{port}/a.csv", resolve=resolving_to("127.0.0.1"))
    with pytest.raises(ssl.SSLCertVerificationError):
        sources.fetch(other, max_bytes=100, timeout=5, context=trusting)
