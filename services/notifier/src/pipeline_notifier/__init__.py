"""The notifier: the Resonate worker that emails pipeline outcomes over SMTP.

It listens in the ``notifier`` group and runs one durable function,
``send_pipeline_email``. It knows nothing of Databricks or of the gateway.
"""
