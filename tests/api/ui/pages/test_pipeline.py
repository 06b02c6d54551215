"""A pipeline's page (ui/pages/pipeline.py) over ASGI, in process.

Its actions and who may take them, who sees the page, its result, its live fragment.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline_shared import promise_tree
from pipeline_shared.models import RunError
from tests.support.ui_gateway import (
    BOB_KEY,
    CSV_RESULT,
    Page,
    serve,
    wait_for_state,
)


async def test_cancel_goes_through_a_confirmation_and_cancels(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    await page.harness.wait_for_step_run(pipeline_id, "1")
    html = await wait_for_state(page, pipeline_id, "waiting")
    assert f'href="/ui/pipelines/{pipeline_id}/cancel"' in html

    confirm = await page.client.get(f"/ui/pipelines/{pipeline_id}/cancel")
    assert confirm.status_code == 200 and "Yes, cancel it" in confirm.text
    response = await page.post(f"/ui/pipelines/{pipeline_id}/cancel")

    assert (response.status_code, response.headers["location"]) == (303, f"/ui/pipelines/{pipeline_id}?done=cancel")
    await wait_for_state(page, pipeline_id, "cancelled")
    assert page.harness.jobs.cancelled, "the run was cancelled"


async def test_a_cancel_from_the_page_records_who_cancelled(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    await page.harness.wait_for_step_run(pipeline_id, "1")

    assert (await page.post(f"/ui/pipelines/{pipeline_id}/cancel")).status_code == 303

    callback = promise_tree.callback_promise_id(promise_tree.step_base(pipeline_id, "1"))
    settled = await page.harness.promises_get(callback)
    assert settled.value.data["source"] == "user" and settled.value.data["by"] == "key:alice"


@pytest.mark.parametrize("action", ["repair", "abandon"])
async def test_repair_and_abandon_are_refused_with_the_reason_when_not_awaiting_repair(page: Page, action: str) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    await page.harness.wait_for_step_run(pipeline_id, "1")

    response = await page.post(f"/ui/pipelines/{pipeline_id}/{action}")

    assert response.status_code == 409
    assert f"pipeline &#39;{pipeline_id}&#39; is not awaiting repair: no job step of it is" in response.text
    assert "Traceback" not in response.text


async def test_after_a_repair_changing_a_parameter_the_page_shows_the_new_value_and_the_start_one(page: Page) -> None:
    """Issue 20, finding 7: the page showed the start's ``source`` while the run and the email used the repair's."""
    await page.sign_in()
    pipeline_id = await page.start(**{"param.source": "/Workspace/Shared/pipelines/missing.csv"})
    await page.harness.wait_for_step_run(pipeline_id, "1")
    missing = RunError(type="FileNotFoundError", message="x")
    await page.harness.settle_step(pipeline_id, "1", status="failure", error=missing)
    await wait_for_state(page, pipeline_id, "awaiting_repair")

    response = await page.post(
        f"/ui/pipelines/{pipeline_id}/repair", {"param.source": "/Workspace/Shared/pipelines/fixed.csv"}
    )
    assert response.status_code == 303, response.text
    html = await wait_for_state(page, pipeline_id, "waiting")

    row = html[html.index('<th scope="row">source</th>') :].split("</tr>", 1)[0].replace("<wbr>", "")
    assert (
        "/Workspace/Shared/pipelines/fixed.csv" in row
        and "(changed by a repair; started with /Workspace/Shared/pipelines/missing.csv)" in row
    )


async def test_another_principals_pipeline_is_a_404_page_like_a_missing_one(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    page.client.cookies.clear()
    await page.sign_in(BOB_KEY)

    for path in (f"/ui/pipelines/{pipeline_id}", f"/ui/pipelines/{pipeline_id}/cancel", "/ui/pipelines/never-was"):
        response = await page.client.get(path)
        assert response.status_code == 404 and "No such pipeline" in response.text, path
    refused = await page.post(f"/ui/pipelines/{pipeline_id}/cancel")
    assert refused.status_code == 404
    assert not page.harness.jobs.cancelled


async def test_a_finished_pipeline_shows_its_result_as_tables_and_its_email(keys_file: Path) -> None:
    async with serve(keys_file, MAILSINK_UI_URL="http://localhost:8025") as page:
        await page.sign_in()
        pipeline_id = await page.start()
        await page.harness.wait_for_step_run(pipeline_id, "1")
        await page.harness.settle_step(pipeline_id, "1", status="success", result=CSV_RESULT)
        html = await wait_for_state(page, pipeline_id, "succeeded")

    table = html[html.index('id="result-columns"') : html.index("</table>", html.index('id="result-columns"'))]
    headers = re.findall(r'<th scope="col">([^<]*)</th>', table)
    assert headers == ["name", "type", "count", "missing", "distinct", "min", "max", "mean"]
    assert '<th scope="row">temp</th>' in table and ">9<" in table
    assert '<tr><th scope="row">row_count</th><td>3</td></tr>' in html
    assert "hx-trigger" not in html, "a final pipeline stops polling"
    message_id = f"<{pipeline_id}.0@test>"
    assert "http://localhost:8025/ui/by-message-id/%3C" in html and "Open it in the mail sink" in html
    # Shown escaped, with places to wrap on a phone (<wbr>) after its dots and @.
    assert message_id.replace("<", "&lt;").replace(">", "&gt;") in html.replace("<wbr>", "")


async def test_the_live_fragment_answers_204_while_nothing_changed(page: Page) -> None:
    await page.sign_in()
    pipeline_id = await page.start()
    await page.harness.wait_for_step_run(pipeline_id, "1")
    html = await wait_for_state(page, pipeline_id, "waiting")
    live = re.search(r'hx-get="([^"]+/live\?version=[0-9a-f]+)"', html)
    assert live is not None
    assert (await page.client.get(live.group(1))).status_code == 204
    await page.harness.settle_step(pipeline_id, "1", status="success", result={"rows": 1})
    await wait_for_state(page, pipeline_id, "succeeded")
    changed = await page.client.get(live.group(1))
    assert changed.status_code == 200 and "succeeded" in changed.text


async def test_a_scheduled_pipelines_page_says_when_its_schedule_starts_the_next(
    keys_file: Path, tmp_path: Path
) -> None:
    from tests.support.pipeline_harness import CATALOGUE_FILE

    scheduled = tmp_path / "catalogue.toml"
    scheduled.write_text(
        CATALOGUE_FILE.read_text(encoding="utf-8")
        + '\n[pipelines.customer-onboarding.schedule]\ncron = "30 2 * * *"\nemail = "ops@example.com"\n',
        encoding="utf-8",
    )
    async with serve(keys_file, JOB_CATALOGUE_FILE=scheduled) as page:
        await page.sign_in()
        pipeline_id = await page.start(job="customer-onboarding")
        html = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text

    assert "Next scheduled start" in html and 'id="next-firing"' in html
    # A client started this one: nothing says a schedule did.
    assert 'id="scheduled-at"' not in html
