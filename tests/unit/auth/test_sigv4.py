"""SigV4 verification against requests signed by botocore's own signers."""

from __future__ import annotations

import calendar
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from modelhost.auth.keys import AccessKey, KeyRing, add_key
from modelhost.auth.policy import Policy
from modelhost.auth.sigv4 import Received, Verifier, _from_header, _Headers
from modelhost.errors import (
    AuthFailure,
    IncompleteSignature,
    InvalidSignatureException,
    MissingAuthenticationToken,
    UnrecognizedClientException,
)

NOW = "20261206T120000Z"
NOW_S = float(calendar.timegm(time.strptime(NOW, "%Y%m%dT%H%M%SZ")))
HOST = "127.0.0.1:8765"
SAGEMAKER = frozenset({"sagemaker"})
S3 = frozenset({"s3"})


@pytest.fixture
def key(tmp_path: Path) -> AccessKey:
    return add_key(tmp_path / "keys.json", "alice", Policy.parse("admin"))


@pytest.fixture
def verifier(tmp_path: Path, key: AccessKey) -> Verifier:
    return Verifier(KeyRing(tmp_path / "keys.json"), "us-east-1", clock=lambda: NOW_S)


def sign(
    key: AccessKey,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    service: str = "sagemaker",
    region: str = "us-east-1",
    stamp: str = NOW,
    s3: bool = False,
    secret: str | None = None,
) -> tuple[Received, str]:
    """Sign with botocore at ``stamp``; the request as the server receives it."""
    request = AWSRequest(method, f"http://{HOST}{target}", data=body, headers=headers or {})
    request.context["timestamp"] = stamp
    request.headers["X-Amz-Date"] = stamp
    request.headers["Host"] = HOST
    kind = S3SigV4Auth if s3 else SigV4Auth
    auth = kind(Credentials(key.access_key_id, secret or key.secret), service, region)
    if s3 and "X-Amz-Content-SHA256" not in request.headers:
        request.headers["X-Amz-Content-SHA256"] = auth.payload(request)
    to_sign = auth.string_to_sign(request, auth.canonical_request(request))
    signature = auth.signature(to_sign, request)
    names = auth.signed_headers(auth.headers_to_sign(request))
    request.headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={auth.scope(request)}, SignedHeaders={names}, "
        f"Signature={signature}"
    )
    path, _, query = target.partition("?")
    raw = [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]
    raw.append((b"user-agent", b"Boto3/1.0 unsigned"))  # unsigned headers do not matter
    return Received(method, path, query, raw, body if not s3 else None), to_sign


def test_control_plane_request(verifier: Verifier, key: AccessKey) -> None:
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.ListModels"}
    received, _ = sign(key, "POST", "/", b'{"MaxResults": 5}', headers)
    assert verifier.verify(received, SAGEMAKER) == key


@pytest.mark.parametrize(
    "target",
    [
        "/endpoints/my-ep/invocations",
        "/endpoints/my-ep/invocations?a=1&b=x%20y&a=0",
        "/metrics",
    ],
)
def test_paths_and_queries(verifier: Verifier, key: AccessKey, target: str) -> None:
    received, _ = sign(key, "POST", target, b"1,2,3", {"Content-Type": "text/csv"})
    assert verifier.verify(received, SAGEMAKER) == key


def test_the_string_to_sign_is_botocores(verifier: Verifier, key: AccessKey) -> None:
    """The helper-assembled string to sign equals SigV4Auth's over a whole AWSRequest."""
    for s3, target in ((False, "/endpoints/e/invocations?x=1"), (True, "/b/dir/a%20b%2Bc.txt")):
        received, want = sign(key, "PUT", target, b"data", {"Content-Type": "a/b"}, s3=s3)
        if s3:
            received = replace(received, body=b"data")
        headers = _Headers(received.headers)
        header = _from_header(headers.get("authorization") or "", headers, s3)
        got = verifier.string_to_sign(received, headers, header, s3)
        assert got == want


def test_s3_requests_payload_forms_and_presigned(verifier: Verifier, key: AccessKey) -> None:
    received, _ = sign(key, "GET", "/bucket?list-type=2&prefix=a%2Fb", s3=True, service="s3")
    assert verifier.verify(received, S3, s3=True) == key
    for payload in ("UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"):
        headers = {"X-Amz-Content-SHA256": payload, "Content-Encoding": "aws-chunked"}
        received, _ = sign(key, "PUT", "/bucket/k", b"", headers, s3=True, service="s3")
        assert verifier.verify(received, S3, s3=True) == key  # the seed signature


def presigned(key: AccessKey, version: str | None) -> Received:
    config = Config(signature_version=version) if version else None
    client: Any = boto3.client(
        "s3",
        endpoint_url=f"http://{HOST}",
        region_name="us-east-1",
        aws_access_key_id=key.access_key_id,
        aws_secret_access_key=key.secret,
        config=config,
    )
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "x y.txt"})
    parts = urlsplit(url)
    return Received("GET", parts.path, parts.query, [(b"host", HOST.encode())], None)


@pytest.mark.parametrize("version", [None, "s3v4"])
def test_presigned_urls(tmp_path: Path, key: AccessKey, version: str | None) -> None:
    verifier = Verifier(KeyRing(tmp_path / "keys.json"), "us-east-1")  # the real clock
    received = presigned(key, version)
    assert verifier.verify(received, S3, s3=True) == key
    tampered = replace(received, path=received.path.replace("x", "z"))
    with pytest.raises(InvalidSignatureException) as bad:
        verifier.verify(tampered, S3, s3=True)
    assert bad.value.s3_code == "SignatureDoesNotMatch"
    late = Verifier(KeyRing(tmp_path / "keys.json"), "us-east-1", clock=lambda: time.time() + 7200)
    with pytest.raises(InvalidSignatureException) as expired:
        late.verify(received, S3, s3=True)
    assert (expired.value.s3_code, expired.value.s3_message) == (
        "AccessDenied",
        "Request has expired",
    )


def refusal(
    verifier: Verifier, received: Received, services: frozenset[str] = SAGEMAKER
) -> AuthFailure:
    with pytest.raises(AuthFailure) as caught:
        verifier.verify(received, services)
    return caught.value


def test_failures_have_awss_codes(verifier: Verifier, key: AccessKey) -> None:
    body = b"{}"
    wrong = refusal(verifier, sign(key, "POST", "/", body, secret="x" * 40)[0])
    assert isinstance(wrong, InvalidSignatureException)
    other = AccessKey("bob", "AKIDBOB", "s", Policy("admin"))
    assert isinstance(
        refusal(verifier, sign(other, "POST", "/", body)[0]), UnrecognizedClientException
    )
    nothing = Received("POST", "/", "", [(b"host", HOST.encode())], body)
    assert isinstance(refusal(verifier, nothing), MissingAuthenticationToken)
    assert refusal(verifier, nothing).s3_code == "AccessDenied"
    region = refusal(verifier, sign(key, "POST", "/", body, region="eu-west-1")[0])
    assert "region" in region.message and region.s3_code == "AuthorizationHeaderMalformed"
    service = refusal(verifier, sign(key, "POST", "/", body, service="sts")[0])
    assert "correct service: 'sagemaker'" in service.message


@pytest.mark.parametrize(
    ("stamp", "ok"),
    [
        ("20261206T114500Z", True),  # 15 minutes ago: the edge
        ("20261206T114459Z", False),
        ("20261206T121500Z", True),
        ("20261206T121501Z", False),
    ],
)
def test_clock_skew(verifier: Verifier, key: AccessKey, stamp: str, ok: bool) -> None:
    received = sign(key, "POST", "/", b"{}", stamp=stamp)[0]
    if ok:
        assert verifier.verify(received, SAGEMAKER) == key
        return
    err = refusal(verifier, received)
    assert isinstance(err, InvalidSignatureException)
    assert "Signature expired" in err.message or "not yet current" in err.message
    assert err.s3_code == "RequestTimeTooSkewed"


def test_tampered_body_header_and_declared_hash(verifier: Verifier, key: AccessKey) -> None:
    received = sign(key, "POST", "/", b"{}", {"X-Amz-Target": "SageMaker.ListModels"})[0]
    assert isinstance(
        refusal(verifier, replace(received, body=b'{"a":1}')), InvalidSignatureException
    )
    swapped = [
        (k, b"SageMaker.DeleteModel" if k == b"x-amz-target" else v) for k, v in received.headers
    ]
    assert isinstance(
        refusal(verifier, replace(received, headers=swapped)), InvalidSignatureException
    )
    declared = sign(key, "POST", "/", b"{}", {"X-Amz-Content-SHA256": "0" * 64})[0]
    assert "x-amz-content-sha256" in refusal(verifier, declared).message


@pytest.mark.parametrize(
    "header",
    [
        "AWS4-HMAC-SHA256 Credential=AK/20261206/us-east-1/sagemaker/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AK/20261206/us-east-1, SignedHeaders=host, Signature=ab",
        "AWS AK:signature",
    ],
)
def test_malformed_authorization(verifier: Verifier, header: str) -> None:
    received = Received(
        "POST",
        "/",
        "",
        [
            (b"host", HOST.encode()),
            (b"x-amz-date", NOW.encode()),
            (b"authorization", header.encode()),
        ],
        b"",
    )
    assert isinstance(refusal(verifier, received), IncompleteSignature)


def test_a_signature_with_odd_characters_is_refused_not_crashed(
    verifier: Verifier, key: AccessKey
) -> None:
    received, _ = sign(key, "POST", "/", b"{}")
    odd = [
        (k, v.replace(b"Signature=", b"Signature=\xe9\xff") if k == b"authorization" else v)
        for k, v in received.headers
    ]
    assert isinstance(refusal(verifier, replace(received, headers=odd)), InvalidSignatureException)
