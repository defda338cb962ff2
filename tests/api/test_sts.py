"""STS on the SageMaker API's port (awsQuery): boto3 and the AWS CLI, the answers, and STS's
own XML error shape for bad parameters."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.fixtures.server import REGION, LiveServer, aws_env

pytestmark = pytest.mark.api

AWS = Path(sys.executable).parent / "aws"
ACCOUNT = "123456789012"
ROLE = "arn:aws:iam::123456789012:role/modelhost-test"
NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"


@pytest.fixture
def sts(server: LiveServer) -> Any:
    return server.client("sts")


def post_form(server: LiveServer, body: str) -> tuple[int, ET.Element]:
    req = urllib.request.Request(
        f"{server.url}/",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, ET.fromstring(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, ET.fromstring(exc.read())


def test_get_caller_identity(sts: Any) -> None:
    who = sts.get_caller_identity()
    assert who["Account"] == ACCOUNT
    assert who["UserId"] == "test"  # the access key id the client signed with
    assert who["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"


def test_assume_role_returns_the_callers_key_and_an_assumed_role_identity(
    server: LiveServer, sts: Any
) -> None:
    out = sts.assume_role(RoleArn=ROLE, RoleSessionName="build-7", DurationSeconds=900)
    creds = out["Credentials"]
    assert creds["AccessKeyId"] == "test"
    assert creds["SessionToken"] and creds["SecretAccessKey"]
    assert creds["Expiration"].tzinfo is not None
    assert out["AssumedRoleUser"]["Arn"] == (
        f"arn:aws:sts::{ACCOUNT}:assumed-role/modelhost-test/build-7"
    )
    assumed = boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    )
    who = assumed.client("sts", endpoint_url=server.url).get_caller_identity()
    assert who["Arn"] == out["AssumedRoleUser"]["Arn"]
    assert who["UserId"] == out["AssumedRoleUser"]["AssumedRoleId"]
    # the assumed credentials work on the SageMaker API too
    sm = assumed.client("sagemaker", endpoint_url=server.url)
    assert "Endpoints" in sm.list_endpoints()


def test_aws_cli_reaches_sts_through_the_environment(server: LiveServer, tmp_path: Path) -> None:
    env = aws_env(tmp_path) | {"AWS_ENDPOINT_URL_STS": server.url, "AWS_MAX_ATTEMPTS": "1"}
    done = subprocess.run(
        [str(AWS), "sts", "get-caller-identity"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["Account"] == ACCOUNT


def test_bad_parameters_get_stss_validation_error(server: LiveServer) -> None:
    raw = server.client("sts", parameter_validation=False)
    with pytest.raises(ClientError) as info:
        raw.assume_role(RoleArn="short", RoleSessionName="x", DurationSeconds=60)
    err: dict[str, Any] = dict(info.value.response["Error"])
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["Code"] == "ValidationError"
    assert err["Type"] == "Sender"
    assert err["Message"].startswith("3 validation errors detected: ")
    assert "Value 'short' at 'roleArn' failed to satisfy constraint" in err["Message"]
    duration = "at 'durationSeconds' failed to satisfy constraint: Member must have value "
    assert duration in err["Message"]
    with pytest.raises(ClientError) as info:
        raw.assume_role(RoleSessionName="session")
    assert info.value.response["Error"]["Message"] == (
        "1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: "
        "Member must not be null"
    )


def test_error_document_is_stss_xml(server: LiveServer) -> None:
    status, doc = post_form(
        server,
        f"Action=AssumeRole&Version=2011-06-15&RoleArn={ROLE}&RoleSessionName=s1"
        "&DurationSeconds=abc",
    )
    assert status == 400
    assert doc.tag == f"{NS}ErrorResponse"
    assert doc.findtext(f"{NS}Error/{NS}Code") == "InvalidParameterValue"
    assert doc.findtext(f"{NS}Error/{NS}Type") == "Sender"
    assert "durationSeconds" in (doc.findtext(f"{NS}Error/{NS}Message") or "")
    assert doc.findtext(f"{NS}RequestId")


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ("Version=2011-06-15", "MissingAction", "The request must contain the parameter Action."),
        (
            "Action=Nope&Version=2011-06-15",
            "InvalidAction",
            "Could not find operation Nope for version 2011-06-15.",
        ),
        (
            "Action=GetSessionToken&Version=2011-06-15",
            "InvalidAction",
            "Operation GetSessionToken is not supported by modelhost yet.",
        ),
    ],
)
def test_unknown_and_unsupported_actions(
    server: LiveServer, body: str, code: str, message: str
) -> None:
    status, doc = post_form(server, body)
    assert status == 400
    assert doc.findtext(f"{NS}Error/{NS}Code") == code
    assert doc.findtext(f"{NS}Error/{NS}Message") == message


def test_success_document(server: LiveServer) -> None:
    status, doc = post_form(server, "Action=GetCallerIdentity&Version=2011-06-15")
    assert status == 200
    assert doc.tag == f"{NS}GetCallerIdentityResponse"
    assert doc.findtext(f"{NS}GetCallerIdentityResult/{NS}Account") == ACCOUNT
    assert doc.findtext(f"{NS}ResponseMetadata/{NS}RequestId")
