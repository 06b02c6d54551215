"""The client's copy of the development key is the gateway's key."""

from pipeline_api.auth import keys as gateway_keys
from pipeline_client import keys as client_keys


def test_the_clients_development_key_is_the_gateways() -> None:
    assert client_keys.DEVELOPMENT_API_KEY == gateway_keys.DEVELOPMENT_API_KEY
