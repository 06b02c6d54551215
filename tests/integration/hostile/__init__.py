"""Hostile clients on the compose stack: each test asserts the refusal and that nothing changed."""
