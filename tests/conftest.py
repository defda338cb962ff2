"""Shared fixtures. Fixture modules live in tests/fixtures/ and are registered here."""

pytest_plugins = [
    "tests.fixtures.seaweed",
    "tests.fixtures.server",
    "tests.fixtures.postgres",
    "tests.fixtures.containers",
    "tests.fixtures.sagemaker_sdk",
    # The plugin the package ships (modelhost_server); its pytest11 entry point has this same
    # name, so an installed package does not register it twice.
    "modelhost.testing",
    "pytester",
]
