"""Fixtures of the tests of pipeline_api/domain/: none shared yet; the start limits serve their own gateway."""
