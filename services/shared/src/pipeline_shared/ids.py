"""Ids derived from a pipeline id.

Every durable effect is keyed by the pipeline id so that a retried or replayed
step repeats the same effect instead of making a new one: the Databricks
idempotency token, the email's Message-ID and the callback promise's id all
come from here.
"""

from __future__ import annotations

import hashlib

#: The pipeline workflow's children, in the order the workflow creates them.
#: Resonate numbers a workflow's children ``{root}:1``, ``{root}:2``, ... by
#: call order, so these positions are part of the contract between the worker
#: (which creates them) and the gateway (which reads them to report state and
#: to settle the callback). The worker's tests assert the order.
CALLBACK_PROMISE_SEQ = 1
TRIGGER_STEP_SEQ = 2


def callback_promise_id(pipeline_id: str) -> str:
    """The promise the notebook's callback settles."""
    return f"{pipeline_id}:{CALLBACK_PROMISE_SEQ}"


def trigger_step_id(pipeline_id: str) -> str:
    """The step whose value records the Databricks run."""
    return f"{pipeline_id}:{TRIGGER_STEP_SEQ}"


def run_index_id(run_id: int, attempt: int = 0) -> str:
    """The promise that names the pipeline (and attempt) a Databricks run belongs to.

    Written for runs of jobs that send webhook notifications, whose payload
    names only the job and the run; a repair of the run gets one of its own
    (``/1``, ``/2``, ...), since a repaired run keeps its id. The ``/`` keeps
    it apart from every pipeline id and child id, neither of which may hold one.
    """
    return f"databricks-run/{run_id}" if attempt == 0 else f"databricks-run/{run_id}/{attempt}"


def repair_window_id(pipeline_id: str, attempt: int) -> str:
    """The promise recording that repair attempt ``attempt`` waits for a person (its decision promise, deadline)."""
    return f"{pipeline_id}:await{attempt}"


def pipeline_id_of(promise_id: str) -> str:
    """The pipeline a child promise belongs to: its Resonate origin."""
    return promise_id.split(":", 1)[0]


def idempotency_token(namespace: str, pipeline_id: str) -> str:
    """The ``run_now`` idempotency token for a pipeline.

    Databricks keeps tokens per workspace and caps them at 64 characters. The
    namespace keeps two deployments that share a workspace, and reuse pipeline
    ids, from colliding.
    """
    digest = hashlib.sha256(f"{namespace}/{pipeline_id}".encode()).hexdigest()
    return f"pipeline-{digest[:48]}"


def email_message_id(pipeline_id: str, state: str, domain: str, *, kind: str = "outcome", attempt: int = 0) -> str:
    """The Message-ID of one of a pipeline's emails: its outcome, or that it awaits repair after attempt N.

    Derived, not random, so a resend after a crash is recognisably the same
    message to the receiving server, which may deduplicate on it. The email
    of an outcome reached without any repair keeps the id it always had.
    """
    key = f"{pipeline_id}/{state}" if (kind, attempt) == ("outcome", 0) else f"{pipeline_id}/{kind}/{state}/{attempt}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<pipeline.{digest}@{domain}>"


def attempt_record_id(pipeline_id: str, attempt: int) -> str:
    """The promise recording repair attempt ``attempt`` (1, 2, ...): where the gateway finds its promises."""
    return f"{pipeline_id}:attempt{attempt}"
