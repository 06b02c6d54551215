"""The HTTP gateway: starts pipelines, reports their state, settles callback promises.

It is the only public surface. It validates, starts workflows on the worker,
reads Resonate's durable state and settles callback promises; it never calls
Databricks and never sends email.
"""
