"""Fixtures of the tests of pipeline_api/auth/.

None shared yet: each module serves the gateway it needs (an issuer on loopback, a keys file).
"""
