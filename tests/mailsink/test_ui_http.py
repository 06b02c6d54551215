"""The sink's page over plain HTTP: refusals as pages, escaping, redirects, headers.

What a browser would make of it is tests/mailsink/test_ui.py; these read the
HTML and the status codes a browser is given.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiosmtplib
import httpx
import pytest

from mailsink import MailSink
from tests.support.mail_messages import make_message, unique_address

HOSTILE = '<script>alert("x")</script>'


async def send(sink: MailSink, **fields: Any) -> None:
    message = make_message(to=unique_address(), **fields)
    await aiosmtplib.send(message, hostname=sink.smtp_host, port=sink.smtp_port)


def assert_page(answer: httpx.Response, status: int, code: str) -> None:
    """A page for a person (HTML, not JSON) with the status and the API's code."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert f"<code>{code}</code>" in answer.text
    assert '<a href="/ui">' in answer.text, "a way back to the list"


async def test_an_unknown_message_number_is_a_404_page(sink: MailSink, http: httpx.AsyncClient) -> None:
    answer = await http.get("/ui/messages/999")
    assert_page(answer, 404, "message_not_found")
    assert "No message 999 is stored" in answer.text


@pytest.mark.parametrize("number", ["abc", "1.5", "-", "%3Cscript%3E"])
async def test_a_message_number_that_is_not_a_number_is_a_422_page(
    sink: MailSink, http: httpx.AsyncClient, number: str
) -> None:
    answer = await http.get(f"/ui/messages/{number}")
    assert_page(answer, 422, "invalid_request")
    assert "path.number" in answer.text
    assert "<script>" not in answer.text


@pytest.mark.parametrize("query", ["refresh=0", "refresh=soon", "refresh=99999", f"pipeline={'p' * 257}"])
async def test_bad_list_parameters_are_a_422_page(sink: MailSink, http: httpx.AsyncClient, query: str) -> None:
    assert_page(await http.get(f"/ui?{query}"), 422, "invalid_request")


async def test_an_unknown_page_is_a_404_page(sink: MailSink, http: httpx.AsyncClient) -> None:
    answer = await http.get("/ui/messages/1/attachments")
    assert_page(answer, 404, "page_not_found")
    slash = await http.get("/ui/", params={"pipeline": "p-1"})
    assert (slash.status_code, slash.headers["location"]) == (308, "/ui?pipeline=p-1")
    # The JSON API keeps its own answers.
    missing = await http.get("/messages/999")
    assert (missing.status_code, missing.json()["code"]) == (404, "message_not_found")


async def test_hostile_headers_and_bodies_are_text_on_every_page(sink: MailSink, http: httpx.AsyncClient) -> None:
    await send(
        sink,
        subject=f"Report {HOSTILE}",
        sender=f'"{HOSTILE}" <evil@example.test>',
        pipeline_id=f'p"><img src=x onerror=alert(1)>{HOSTILE}',
        text=f"text part {HOSTILE}",
        html=f"<p>html part</p>{HOSTILE}",
    )
    for path in ("/ui", "/ui/messages/1"):
        page = (await http.get(path)).text
        assert "<script>" not in page, path
        assert "<img src=x" not in page, path
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page, path
    page = (await http.get("/ui/messages/1")).text
    # The pipeline link's query is URL-encoded, its text escaped.
    assert 'href="/ui?pipeline=p%22%3E%3Cimg+src%3Dx' in page
    # The HTML part is only ever an attribute value of the sandboxed frame.
    assert 'sandbox srcdoc="&lt;p&gt;html part&lt;/p&gt;&lt;script&gt;' in page


async def test_pages_forbid_scripts_and_sniffing(sink: MailSink, http: httpx.AsyncClient) -> None:
    await send(sink)
    for path in ("/ui", "/ui/messages/1", "/ui/messages/2"):  # the last one a 404 page
        headers = (await http.get(path)).headers
        policy = headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy, path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"
    css = await http.get("/ui/static/ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


async def test_live_refresh_is_a_meta_refresh_toggled_by_a_link(sink: MailSink, http: httpx.AsyncClient) -> None:
    still = (await http.get("/ui", params={"pipeline": "p-1"})).text
    assert 'http-equiv="refresh"' not in still
    assert 'href="/ui?pipeline=p-1&amp;refresh=5"' in still
    live = (await http.get("/ui", params={"pipeline": "p-1", "refresh": 5})).text
    assert '<meta http-equiv="refresh" content="5">' in live
    assert 'href="/ui?pipeline=p-1">stop</a>' in live
    # The filter form keeps refreshing on.
    assert '<input type="hidden" name="refresh" value="5">' in live


@pytest.mark.parametrize(
    "given",
    [
        "<run.42/a=b@mail.example.test>",  # '/' and '=' are allowed in a Message-ID
        "run.42/a=b@mail.example.test",  # without the angle brackets
    ],
)
async def test_a_message_id_redirects_to_its_page(sink: MailSink, http: httpx.AsyncClient, given: str) -> None:
    await send(sink)
    await send(sink, message_id="<run.42/a=b@mail.example.test>")
    answer = await http.get(f"/ui/by-message-id/{quote(given, safe='')}")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/messages/2"
    # Unencoded, as someone would type it, too.
    assert (await http.get(f"/ui/by-message-id/{given}")).headers["location"] == "/ui/messages/2"


async def test_an_unknown_message_id_is_a_404_page(sink: MailSink, http: httpx.AsyncClient) -> None:
    answer = await http.get(f"/ui/by-message-id/{quote('<never@example.test>', safe='')}")
    assert_page(answer, 404, "message_not_found")
    assert "&lt;never@example.test&gt;" in answer.text


@pytest.mark.parametrize(
    "given",
    [
        "",
        "no-at-sign",
        "<>",
        "two words@example.test",
        "<a@b><c@d>",
        "a@b@c",
        f"<{'x' * 1000}@example.test>",
        HOSTILE,
    ],
)
async def test_a_malformed_message_id_is_a_422_page(sink: MailSink, http: httpx.AsyncClient, given: str) -> None:
    answer = await http.get(f"/ui/by-message-id/{quote(given, safe='')}")
    assert_page(answer, 422, "invalid_message_id")
    assert "<script>" not in answer.text
