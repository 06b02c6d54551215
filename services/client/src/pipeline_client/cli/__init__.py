"""The ``pipelines`` command (needs the ``cli`` extra, for rich)."""
