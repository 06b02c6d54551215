"""The development stack's API key, as the client sends it when given none.

A copy of the gateway's constant (``pipeline_api.keys.DEVELOPMENT_API_KEY``),
not an import of it: the client must install without the gateway. It is a
public value, accepted only by a gateway with ``ENVIRONMENT=development`` and
no keys file; tests/client/test_keys.py fails if the two ever differ.
"""

#: What the compose stack on a laptop accepts with no setup; any other gateway answers 401.
DEVELOPMENT_API_KEY = "pl_dev_development-only-insecure-api-key"
