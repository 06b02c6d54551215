"""An in-memory, single-process stand-in for the Resonate server.

For development and offline CI on machines that cannot pull the official
server image. It serves the real server's wire protocol on the real server's
port -- ``POST /`` envelopes, ``GET /poll/{group}/{pid}`` Server-Sent Events,
``/health`` and ``/ready`` -- so the official SDKs run durable workflows
against it unchanged. Its protocol semantics are the Python SDK's own
reference model (``resonate.connections.local.ServerState``), corrected where
it departs from the real server (see :mod:`resonate_dev.model`).

It keeps everything in memory: a restart loses every promise, task and
schedule. It is not for production.
"""
