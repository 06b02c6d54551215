"""The pipelines this project ships, written with the building blocks a team's own use.

``one-job`` is the pipeline of every standalone catalogue job: the original
example's four lines (a promise, the trigger, the wait, the email), with the
promise, the trigger, the wait and the repairs inside the job step, and the
outcome email sent by the runner once the function returns.

``customer-onboarding`` is the example of several jobs: ingest a customer's
upload; from what ingest produced, score the risk and build the report side
by side; above a threshold, a person approves before the customer is
activated; then one summary email.
"""

from __future__ import annotations

from datetime import timedelta

from pipeline_shared.catalogue import ONE_JOB_FUNCTION
from pipeline_shared.models import JobRun

from .pipelines import Pipeline, pipeline


@pipeline(ONE_JOB_FUNCTION)
async def one_job(p: Pipeline) -> JobRun:
    """Run the entry's job with the start's parameters; the pipeline ends as its run does."""
    return await p.job(p.name, p.parameters, check=False)


@pipeline("customer-onboarding")
async def customer_onboarding(p: Pipeline) -> dict:
    """Ingest, then score and report side by side, approve a high risk, and email a summary."""
    ingested = await p.job("ingest-upload", {"upload": p.parameters["upload"]})
    table = ingested.result["table"]
    scoring = p.job("risk-score", {"table": table})
    reporting = p.job("report-build", {"table": table})
    score, report = await scoring, await reporting

    risk = int(score.result["score"])
    if risk >= int(p.parameters["approval_threshold"]):
        await p.approval(
            "high-risk",
            f"Customer upload scored {risk} (threshold {p.parameters['approval_threshold']}): activate it?",
            deadline=timedelta(days=2),
        )
    await p.email(
        f"Onboarding {p.id}: done",
        [f"{ingested.result['rows']} rows ingested into {table}.", f"Risk score: {risk}."],
        runs=[ingested, score, report],
        name="summary",
    )
    return {"table": table, "score": risk, "report": report.result.get("report")}
