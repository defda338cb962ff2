"""Access keys and SigV4 verification against a live server (embedded S3 included), with real
boto3 clients, the AWS CLI and hand-signed requests (botocore's signer at a chosen time)."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.fixtures.server import FIXTURE_MODELS, REGION, LiveServer, aws_env, deploy

pytestmark = pytest.mark.e2e

AWS = Path(sys.executable).parent / "aws"
ENDPOINT = "allowed-echo"
BUCKET = "auth-bucket"
REVOKE_TIMEOUT_S = 5.0


def keys_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelhost.cli.main", "keys", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def create_key(data_dir: Path, name: str, *policy: str) -> tuple[str, str]:
    out = keys_cli(data_dir, "create", name, "--policy", *policy)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout
    assert lines[0].startswith("AWS_ACCESS_KEY_ID=")
    assert lines[1].startswith("AWS_SECRET_ACCESS_KEY=")
    return lines[0].split("=", 1)[1], lines[1].split("=", 1)[1]


class Keyed:
    """The live server and its keys."""

    def __init__(self, live: LiveServer, keys: dict[str, tuple[str, str]]) -> None:
        self.live = live
        self.keys = keys
        self.s3_url = (live.data_dir / "s3" / "endpoint").read_text().strip()

    def client(self, service: str, key: str = "admin", **kw: Any) -> Any:
        key_id, secret = self.keys.get(key, (key, "nope"))
        cfg = Config(retries={"max_attempts": 1, "mode": "standard"}, **kw.pop("config", {}))
        url = self.s3_url if service == "s3" else self.live.url
        make: Any = boto3.client
        return make(
            service,
            endpoint_url=url,
            region_name=kw.pop("region", REGION),
            config=cfg,
            aws_access_key_id=kw.pop("key_id", key_id),
            aws_secret_access_key=kw.pop("secret", secret),
        )


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    data = tmp_path_factory.mktemp("auth")
    keys = {
        "admin": create_key(data, "admin", "admin"),
        "invoke": create_key(data, "invoker", "invoke", "--endpoints", "allowed-*"),
        "read": create_key(data, "reader", "read-only"),
    }
    assert (data / "keys.json").stat().st_mode & 0o777 == 0o600
    live = LiveServer(data, env={"MODELHOST_EMBEDDED_S3": "true"}).start()
    try:
        server = Keyed(live, keys)
        desc = deploy(server.client("sagemaker"), ENDPOINT, str(FIXTURE_MODELS / "echo"))
        assert desc["EndpointStatus"] == "InService", desc
        yield server
    finally:
        live.stop()
    assert keys["admin"][1] not in live.log_path.read_text(errors="replace")


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def signed(
    server: Keyed,
    key: str,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    service: str = "sagemaker",
    region: str = REGION,
    when: dt.datetime | None = None,
) -> AWSRequest:
    """A request signed with botocore's SigV4Auth at ``when`` (default now)."""
    key_id, secret = server.keys[key]
    request = AWSRequest(method, server.live.url + path, data=body, headers=headers)
    stamp = (when or dt.datetime.now(dt.UTC)).strftime(SIGV4_TIMESTAMP)
    request.context["timestamp"] = stamp
    request.headers["X-Amz-Date"] = stamp
    request.headers["Host"] = server.live.url.removeprefix("http://")
    auth = SigV4Auth(Credentials(key_id, secret), service, region)
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    scope = auth.scope(request)
    names = auth.signed_headers(auth.headers_to_sign(request))
    request.headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={names}, Signature={signature}"
    )
    return request


def send(server: Keyed, request: AWSRequest) -> tuple[int, dict[str, str], bytes]:
    host, port = server.live.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        path = str(request.url).removeprefix(server.live.url)
        conn.request(str(request.method), path, request.body, dict(request.headers.items()))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


JSON = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.ListModels"}
INVOKE_PATH = f"/endpoints/{ENDPOINT}/invocations"


# --- a valid key works on every API ------------------------------------------------------


def test_admin_key_works_everywhere(keyed: Keyed) -> None:
    assert any(
        e["EndpointName"] == ENDPOINT
        for e in keyed.client("sagemaker").list_endpoints()["Endpoints"]
    )
    rt = keyed.client("sagemaker-runtime")
    out = rt.invoke_endpoint(
        EndpointName=ENDPOINT, Body=b'{"x": 1}', ContentType="application/json"
    )
    assert json.loads(out["Body"].read()) == {"x": 1}
    stream = rt.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=b'{"s": 2}', ContentType="application/json"
    )
    parts = b"".join(e["PayloadPart"]["Bytes"] for e in stream["Body"] if "PayloadPart" in e)
    assert json.loads(parts) == {"s": 2}
    assert keyed.client("sts").get_caller_identity()["Account"]
    assert "logGroups" in keyed.client("logs").describe_log_groups()
    assert "Metrics" in keyed.client("cloudwatch").list_metrics(Namespace="AWS/SageMaker")
    s3 = keyed.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="a.txt", Body=b"hello")
    assert s3.get_object(Bucket=BUCKET, Key="a.txt")["Body"].read() == b"hello"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["a.txt"]


def test_assumed_role_credentials_work(keyed: Keyed) -> None:
    creds = keyed.client("sts").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/r", RoleSessionName="session"
    )
    role = creds["Credentials"]
    sm: Any = boto3.client(
        "sagemaker",
        endpoint_url=keyed.live.url,
        region_name=REGION,
        aws_access_key_id=role["AccessKeyId"],
        aws_secret_access_key=role["SecretAccessKey"],
        aws_session_token=role["SessionToken"],
    )
    assert "Models" in sm.list_models()


def test_metrics_need_a_signature(keyed: Keyed) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{keyed.live.url}/metrics", timeout=10)
    assert refused.value.code == 403
    assert refused.value.headers["x-amzn-errortype"] == "MissingAuthenticationToken"
    status, _, body = send(keyed, signed(keyed, "read", "GET", "/metrics", b"", {}))
    assert status == 200 and b"modelhost" in body
    with urllib.request.urlopen(f"{keyed.live.url}/healthz", timeout=10) as health:
        assert health.status == 200  # health checks stay open


# --- each failure gets AWS's code --------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "call", "wrong_secret", "unknown_key"),
    [
        ("sagemaker", "list_models", "InvalidSignatureException", "UnrecognizedClientException"),
        ("sts", "get_caller_identity", "SignatureDoesNotMatch", "InvalidClientTokenId"),
        ("logs", "describe_log_groups", "InvalidSignatureException", "UnrecognizedClientException"),
        ("cloudwatch", "list_metrics", "SignatureDoesNotMatch", "InvalidClientTokenId"),
        ("s3", "list_buckets", "SignatureDoesNotMatch", "InvalidAccessKeyId"),
    ],
)
def test_wrong_secret_and_unknown_key(
    keyed: Keyed, service: str, call: str, wrong_secret: str, unknown_key: str
) -> None:
    admin_id = keyed.keys["admin"][0]
    with pytest.raises(ClientError) as bad_secret:
        getattr(keyed.client(service, key_id=admin_id, secret="wrong"), call)()
    assert code(bad_secret) == wrong_secret
    with pytest.raises(ClientError) as unknown:
        getattr(keyed.client(service, key_id="AKIDUNKNOWN", secret="x"), call)()
    assert code(unknown) == unknown_key


def test_invoke_fast_path_refusals(keyed: Keyed) -> None:
    admin_id = keyed.keys["admin"][0]
    rt = keyed.client("sagemaker-runtime", key_id=admin_id, secret="wrong")
    with pytest.raises(ClientError) as bad:
        rt.invoke_endpoint(EndpointName=ENDPOINT, Body=b"{}", ContentType="application/json")
    assert code(bad) == "InvalidSignatureException"
    assert bad.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    anon = keyed.client("sagemaker-runtime", config={"signature_version": UNSIGNED})
    with pytest.raises(ClientError) as missing:
        anon.invoke_endpoint(EndpointName=ENDPOINT, Body=b"{}", ContentType="application/json")
    assert code(missing) == "MissingAuthenticationToken"
    other = keyed.client("sagemaker-runtime", region="eu-west-1")
    with pytest.raises(ClientError) as region:
        other.invoke_endpoint(EndpointName=ENDPOINT, Body=b"{}", ContentType="application/json")
    assert code(region) == "InvalidSignatureException"
    assert "region" in str(region.value)


def test_missing_auth_per_protocol(keyed: Keyed) -> None:
    anon: dict[str, Any] = {"signature_version": UNSIGNED}
    with pytest.raises(ClientError) as sm:
        keyed.client("sagemaker", config=anon).list_models()
    assert code(sm) == "MissingAuthenticationToken"
    with pytest.raises(ClientError) as s3:
        keyed.client("s3", config=anon).list_objects_v2(Bucket=BUCKET)
    assert code(s3) == "AccessDenied"


def test_skew_scope_and_tampering(keyed: Keyed) -> None:
    def status_code(request: AWSRequest) -> tuple[int, str, bytes]:
        status, headers, body = send(keyed, request)
        return status, headers.get("x-amzn-errortype", ""), body

    assert status_code(signed(keyed, "admin", "POST", "/", b"{}", JSON))[0] == 200
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16)
    status, err, body = status_code(signed(keyed, "admin", "POST", "/", b"{}", JSON, when=old))
    assert (status, err) == (403, "InvalidSignatureException") and b"Signature expired" in body
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=16)
    assert status_code(signed(keyed, "admin", "POST", "/", b"{}", JSON, when=ahead))[1] == (
        "InvalidSignatureException"
    )
    within = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=14)
    assert status_code(signed(keyed, "admin", "POST", "/", b"{}", JSON, when=within))[0] == 200
    wrong_service = signed(keyed, "admin", "POST", "/", b"{}", JSON, service="s3")
    status, err, body = status_code(wrong_service)
    assert err == "InvalidSignatureException" and b"correct service" in body
    tampered = signed(keyed, "admin", "POST", "/", b"{}", JSON)
    tampered.data = b'{"MaxResults": 5}'
    assert status_code(tampered)[1] == "InvalidSignatureException"
    header = signed(keyed, "admin", "POST", "/", b"{}", JSON)
    header.headers.replace_header("X-Amz-Target", "SageMaker.ListEndpoints")
    assert status_code(header)[1] == "InvalidSignatureException"
    invoke = signed(keyed, "admin", "POST", INVOKE_PATH, b"{}", {"Content-Type": "text/csv"})
    invoke.data = b"{1}"
    assert status_code(invoke)[:2] == (403, "InvalidSignatureException")


def test_presigned_s3_get(keyed: Keyed) -> None:
    s3 = keyed.client("s3")
    s3.put_object(Bucket=BUCKET, Key="p.txt", Body=b"presigned")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "p.txt"})
    v4 = keyed.client("s3", config={"signature_version": "s3v4"})
    for client in (s3, v4):  # boto3's default (SigV2 query) and SigV4 presigned URLs
        url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "p.txt"})
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.read() == b"presigned"
        with pytest.raises(urllib.error.HTTPError) as tampered:
            urllib.request.urlopen(url.replace("p.txt", "a.txt"), timeout=10)
        assert tampered.value.code == 403
        assert b"<Code>SignatureDoesNotMatch</Code>" in tampered.value.read()
    expired = v4.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "p.txt"}, ExpiresIn=0
    )
    with pytest.raises(urllib.error.HTTPError) as late:
        urllib.request.urlopen(expired, timeout=10)
    assert late.value.code == 403 and b"Request has expired" in late.value.read()


# --- policies ----------------------------------------------------------------------------


def test_invoke_policy(keyed: Keyed) -> None:
    rt = keyed.client("sagemaker-runtime", "invoke")
    out = rt.invoke_endpoint(EndpointName=ENDPOINT, Body=b"[1]", ContentType="application/json")
    assert out["Body"].read() == b"[1]"
    with pytest.raises(ClientError) as other:
        rt.invoke_endpoint(EndpointName="other-echo", Body=b"[1]", ContentType="application/json")
    assert code(other) == "AccessDeniedException"
    for name, wanted in (("other-echo", "AccessDeniedException"), (ENDPOINT, "ValidationError")):
        with pytest.raises(ClientError) as queued:  # allowed through, then not an async endpoint
            rt.invoke_endpoint_async(EndpointName=name, InputLocation="s3://b/in.json")
        assert code(queued) == wanted
    with pytest.raises(ClientError) as describe:
        keyed.client("sagemaker", "invoke").describe_endpoint(EndpointName=ENDPOINT)
    assert code(describe) == "AccessDeniedException"
    with pytest.raises(ClientError) as s3:
        keyed.client("s3", "invoke").list_buckets()
    assert code(s3) == "AccessDenied"


def test_read_only_policy(keyed: Keyed) -> None:
    sm = keyed.client("sagemaker", "read")
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] == "InService"
    with pytest.raises(ClientError) as create:
        sm.create_model(ModelName="nope", PrimaryContainer={"ModelDataUrl": "/nope"})
    assert code(create) == "AccessDeniedException"
    assert "reader" in str(create.value)
    with pytest.raises(ClientError) as invoke:
        keyed.client("sagemaker-runtime", "read").invoke_endpoint(
            EndpointName=ENDPOINT, Body=b"{}", ContentType="application/json"
        )
    assert code(invoke) == "AccessDeniedException"
    s3 = keyed.client("s3", "read")
    assert s3.get_object(Bucket=BUCKET, Key="a.txt")["Body"].read() == b"hello"
    with pytest.raises(ClientError) as put:
        s3.put_object(Bucket=BUCKET, Key="b.txt", Body=b"no")
    assert code(put) == "AccessDenied"
    with pytest.raises(ClientError) as sts:
        keyed.client("sts", "invoke").get_caller_identity()
    assert code(sts) == "AccessDenied"


# --- keys on a running server, and the clients ------------------------------------------


def test_revoke_takes_effect_at_once(keyed: Keyed) -> None:
    keyed.keys["temp"] = create_key(keyed.live.data_dir, "temp", "admin")
    sm = keyed.client("sagemaker", "temp")
    deadline = time.monotonic() + REVOKE_TIMEOUT_S
    while True:  # a new key is seen within the server's check interval (0.1 s)
        try:
            sm.list_models()
            break
        except ClientError as exc:
            assert time.monotonic() < deadline, exc
    listed = keys_cli(keyed.live.data_dir, "list")
    assert "temp" in listed.stdout and keyed.keys["temp"][1] not in listed.stdout
    assert keys_cli(keyed.live.data_dir, "revoke", "temp").returncode == 0
    deadline = time.monotonic() + REVOKE_TIMEOUT_S
    while True:
        try:
            sm.list_models()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "UnrecognizedClientException"
            break
        assert time.monotonic() < deadline, "a revoked key still works"


def test_aws_cli_and_modelhost_cli(keyed: Keyed, tmp_path: Path) -> None:
    key_id, secret = keyed.keys["admin"]
    env = aws_env(tmp_path) | {"AWS_MAX_ATTEMPTS": "1"}
    good = env | {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    url = ["--endpoint-url", keyed.live.url]

    def run(cmd: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, env=environ, capture_output=True, text=True, timeout=60, check=False
        )

    out = run([str(AWS), *url, "sagemaker", "list-endpoints"], good)
    assert out.returncode == 0 and ENDPOINT in out.stdout, out.stderr
    bad = run([str(AWS), *url, "sagemaker", "list-endpoints"], env)  # test/test
    assert bad.returncode != 0 and "UnrecognizedClientException" in bad.stderr
    cli = [sys.executable, "-m", "modelhost.cli.main", "endpoints", "--url", keyed.live.url]
    listed = run(cli, good)
    assert listed.returncode == 0 and ENDPOINT in listed.stdout, listed.stderr
    refused = run(cli, env)
    assert refused.returncode == 1 and "UnrecognizedClientException" in refused.stderr
    assert "modelhost keys create" in refused.stderr


def test_non_loopback_without_keys_refuses_to_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelhost.cli.main",
            "serve",
            "--host",
            "0.0.0.0",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "modelhost keys create" in done.stderr and "--insecure-no-auth" in done.stderr
