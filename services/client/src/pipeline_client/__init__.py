"""A typed client for the pipelines gateway."""
