"""Keys derived from a pipeline id for the world outside Resonate.

Every durable effect is keyed by the pipeline id so that a retried or replayed
step repeats the same effect instead of making a new one: the Databricks
idempotency token and the email's Message-ID come from here. The ids of the
pipeline's own promises are :mod:`pipeline_shared.promise_tree`'s.
"""

from __future__ import annotations

import hashlib


def idempotency_token(namespace: str, pipeline_id: str) -> str:
    """The ``run_now`` idempotency token for a pipeline.

    Databricks keeps tokens per workspace and caps them at 64 characters. The
    namespace keeps two deployments that share a workspace, and reuse pipeline
    ids, from colliding.
    """
    digest = hashlib.sha256(f"{namespace}/{pipeline_id}".encode()).hexdigest()
    return f"pipeline-{digest[:48]}"


def email_message_id(
    pipeline_id: str,
    state: str,
    domain: str,
    *,
    kind: str = "outcome",
    attempt: int = 0,
    step: str | None = None,
) -> str:
    """The Message-ID of one of a pipeline's emails: its outcome, that it awaits repair after attempt N, or a step's.

    Derived, not random, so a resend after a crash is recognisably the same
    message to the receiving server, which may deduplicate on it. The email
    of an outcome reached without any repair keeps the id it always had.
    An email of step ``step`` (an email the pipeline's code sends, a gate's
    approval request, a job step's wait for repair) is keyed by the step and
    its kind, not by the pipeline's state, which may differ between two sends
    of the same email: each is one message however often it is sent, and
    apart from every other step's.
    """
    if step is not None:
        key = f"{pipeline_id}/step/{step}/{kind}/{attempt}"
    elif (kind, attempt) == ("outcome", 0):
        key = f"{pipeline_id}/{state}"
    else:
        key = f"{pipeline_id}/{kind}/{state}/{attempt}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<pipeline.{digest}@{domain}>"
