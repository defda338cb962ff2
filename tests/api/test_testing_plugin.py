"""The pytest plugin the package ships (``modelhost.testing``): its ``modelhost_server``
fixture, and the README's example run as a user's own test file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import boto3
import pytest

from modelhost.testing import ModelhostServer
from tests.fixtures.server import FIXTURE_MODELS

pytestmark = pytest.mark.api

README = Path(__file__).resolve().parents[2] / "README.md"
FAST = {"MODELHOST_EMBEDDED_S3": "false", "MODELHOST_RECONCILE_INTERVAL_S": "0.2"}


@pytest.mark.modelhost(env=FAST)
def test_clients_reach_the_server_from_the_environment(modelhost_server: ModelhostServer) -> None:
    assert os.environ["AWS_ENDPOINT_URL_SAGEMAKER"] == modelhost_server.url
    assert os.environ["AWS_ENDPOINT_URL_CLOUDWATCH_LOGS"] == modelhost_server.url
    assert Path(os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"]).is_file()
    sm = boto3.client("sagemaker")  # no endpoint_url, no credentials: the fixture's
    assert sm.list_endpoints()["Endpoints"] == []
    sts = boto3.client("sts")
    assert sts.get_caller_identity()["Account"] == "123456789012"
    assert boto3.client("logs").describe_log_groups()["logGroups"] == []


def readme_example() -> str:
    """The README's plugin example (the python block after ``pytest plugin``)."""
    text = README.read_text()
    section = text[text.index("### Testing your own code: the pytest plugin") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_example_passes_as_a_users_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = str((FIXTURE_MODELS / "echo").resolve())
    code = readme_example().replace("/path/to/your/model", model)
    pytester.makepyfile(test_user=code)
    for name, value in FAST.items():  # the user's pytest, and so its server, inherit these
        monkeypatch.setenv(name, value)
    result = pytester.runpytest_subprocess("-p", "modelhost.testing", "-q", timeout=180)
    result.assert_outcomes(passed=1)
