"""What test modules share: doubles, helpers and the machinery behind fixtures, one module per thing.

A test module imports from here, never from another test module or a
conftest.py (tests/test_test_layout.py holds that); fixtures themselves live
in the conftest.py of the folder whose tests use them.

- In process: ``pipeline_harness`` (the real workflow on Resonate's in-process
  server, Databricks and the notifier as doubles), ``gateway_app`` (the gateway
  over ASGI on that harness), ``state_witness`` (fails a refused request that
  changed a promise), ``loopback_server`` (uvicorn on loopback sockets),
  ``oidc_issuer``, ``notifier_emails``, ``mail_messages``, ``smtp_delivery`` (what the
  SMTP tests hand to ``deliver``), ``smtp_relay`` (counts and cuts SMTP connections).
- Databricks emulator: ``emulator_process`` (a real emulator subprocess),
  ``sdk_model_check`` (its answers held to databricks-sdk's models),
  ``emulator_runs`` (runs, plans, notebooks), ``callback_receiver``.
- A real database: ``resonate_pg`` (one resonate-pg container) and
  ``pipeline_promises`` (pipelines' promises written into it);
  ``plain_postgres`` (a Postgres that is not our image, handed over as a
  managed service would, and ``resonate-pg apply`` run on it).
- The compose stack: ``stack`` (the session's stack and its fixture),
  ``stack_clients`` (the gateway, web page, emulator and mail sink as a user
  reaches them), ``fault_batch``, ``gateway_page``, ``browser``, ``promql``.
- Deployment: ``kubernetes_objects`` (the Kubernetes overlays rendered, and read as the cluster would).
"""
