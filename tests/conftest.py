"""Shared pytest configuration for the whole suite."""

pytest_plugins = ["redis_fixtures"]
