"""awsQuery form parameters read along botocore shapes (STS's AssumeRole), and the XML out."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from modelhost.api.query import Caller
from modelhost.api.sts import sts_service
from modelhost.settings import Settings

NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
ROLE = "arn:aws:iam::123456789012:role/r"


def handle(body: str, headers: dict[str, str] | None = None) -> tuple[int, ET.Element]:
    status, _, payload = sts_service(Settings()).handle(body.encode(), headers or {})
    return status, ET.fromstring(payload)


def parsed(body: str) -> dict[str, Any]:
    service = sts_service(Settings())
    return service._parse("AssumeRole", dict(parse_qsl(body, keep_blank_values=True)))


def test_lists_of_structures_and_scalars_take_their_types() -> None:
    req = parsed(
        f"RoleArn={ROLE}&RoleSessionName=s1&DurationSeconds=900"
        "&PolicyArns.member.1.arn=arn:aws:iam::aws:policy/a"
        "&PolicyArns.member.2.arn=arn:aws:iam::aws:policy/b"
        "&Tags.member.1.Key=team&Tags.member.1.Value=ml&TransitiveTagKeys.member.1=team"
    )
    assert req == {
        "RoleArn": ROLE,
        "RoleSessionName": "s1",
        "DurationSeconds": 900,
        "PolicyArns": [{"arn": "arn:aws:iam::aws:policy/a"}, {"arn": "arn:aws:iam::aws:policy/b"}],
        "Tags": [{"Key": "team", "Value": "ml"}],
        "TransitiveTagKeys": ["team"],
    }


def test_empty_list_is_sent_as_a_bare_name() -> None:
    assert (
        parsed(f"RoleArn={ROLE}&RoleSessionName=s1&TransitiveTagKeys=")["TransitiveTagKeys"] == []
    )


def test_caller_key_comes_from_the_credential_scope() -> None:
    auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sts/aws4_request, x=y"
    caller = Caller.from_headers({"authorization": auth, "x-amz-security-token": "t"})
    assert caller == Caller("AKIDEXAMPLE", "t")
    assert Caller.from_headers({}) == Caller(None, None)


def test_assume_role_document() -> None:
    status, doc = handle(f"Action=AssumeRole&Version=2011-06-15&RoleArn={ROLE}&RoleSessionName=s1")
    assert status == 200
    result = doc.find(f"{NS}AssumeRoleResult")
    assert result is not None
    expiration = result.findtext(f"{NS}Credentials/{NS}Expiration") or ""
    assert expiration.endswith("Z")
    assert datetime.fromisoformat(expiration).tzinfo == UTC
    assert result.findtext(f"{NS}AssumedRoleUser/{NS}Arn") == (
        "arn:aws:sts::123456789012:assumed-role/r/s1"
    )
    assert result.findtext(f"{NS}PackedPolicySize") == "0"


def test_errors_carry_type_code_message_and_request_id() -> None:
    status, doc = handle("Action=AssumeRole&Version=2011-06-15&RoleSessionName=s1")
    assert status == 400
    assert doc.tag == f"{NS}ErrorResponse"
    assert doc.findtext(f"{NS}Error/{NS}Type") == "Sender"
    assert doc.findtext(f"{NS}Error/{NS}Code") == "ValidationError"
    assert doc.findtext(f"{NS}RequestId")
