"""The start form (ui/pages/start.py) over ASGI, in process.

Its fields, its errors, who may open it, and where a start leads.
"""

from __future__ import annotations

import re

from tests.support.ui_gateway import (
    READER_KEY,
    Page,
)


async def test_the_start_form_documents_each_parameter(page: Page) -> None:
    await page.sign_in()
    html = (await page.client.get("/ui/start?job=nightly-refresh")).text
    assert '<select id="param-table" name="param.table"' in html
    assert all(f'<option value="{v}"' in html for v in ("sales", "inventory", "customers"))
    words = (await page.client.get("/ui/start?job=word-frequencies")).text
    assert "The text to count words in." in words and "(required)" in words and "A whole number from 1 to 100." in words
    csv = (await page.client.get("/ui/start?job=csv-statistics")).text
    assert "A path under <code>/Workspace/Shared/pipelines/</code>." in csv
    admin_only = (await page.client.get("/ui/start?job=customer-report")).text
    assert "You may not start a job called &#39;customer-report&#39;" in admin_only


async def test_start_form_errors_are_shown_at_the_field_they_concern(page: Page) -> None:
    await page.sign_in()
    response = await page.post(
        "/ui/start",
        {
            "job": "word-frequencies",
            "email": "not-an-email",
            "id": "bad id!",
            "timeout_seconds": "999999",
            "param.top": "0",
        },
    )

    assert response.status_code == 422
    html = response.text
    for name in ("email", "id", "param-text", "param-top"):
        assert f'id="{name}-error"' in html, name
    assert re.search(r'id="param-text-error">is required', html)
    assert 'id="param-top-error">is 0; it must be from 1 to 100' in html
    assert 'value="not-an-email"' in html, "what was typed is kept"
    assert page.harness.jobs.runs_by_token == {}
    too_long = await page.post(
        "/ui/start",
        {"job": "word-frequencies", "email": "a@example.com", "param.text": "a b", "timeout_seconds": "999999"},
    )
    assert (
        too_long.status_code == 422
        and 'id="timeout_seconds-error">is 999999; this job allows at most 86400' in too_long.text
    )
    unknown = await page.post("/ui/start", {"job": "no-such-job", "email": "a@example.com"})
    assert unknown.status_code == 422 and "no job &#39;no-such-job&#39; in the catalogue" in unknown.text


async def test_a_reader_may_not_open_the_start_form(page: Page) -> None:
    await page.sign_in(READER_KEY)
    response = await page.client.get("/ui/start")
    assert response.status_code == 403 and "needs the &#39;start&#39; scope" in response.text


async def test_a_start_redirects_to_the_pipelines_page(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start(job="word-frequencies", **{"param.text": "to be or not to be"})

    html = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text
    assert f"Pipeline <code>{pipeline_id}</code>" in html
    assert "word-frequencies" in html and "to be or not to be" in html
    await page.harness.wait_for_step_run(pipeline_id, "1")
    assert page.harness.jobs.run_now_calls[0]["text"] == "to be or not to be"
    assert page.harness.jobs.run_now_calls[0]["top"] == "10", "an empty field takes the default"
