"""Fixtures of tests/http (defined in http_support.py, which the tests also import)."""

from http_support import app, client, server

__all__ = ["app", "client", "server"]
