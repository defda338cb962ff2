"""Shared fixtures. Fixture modules live in tests/fixtures/ and are registered here."""

pytest_plugins = [
    "tests.fixtures.seaweed",
    "tests.fixtures.server",
    "tests.fixtures.containers",
    "tests.fixtures.sagemaker_sdk",
]
