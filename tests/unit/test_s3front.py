"""The embedded S3 server's front rewrites request heads: no credentials, no SSE-KMS."""

from __future__ import annotations

from modelhost.storage.s3front import rewrite_head


def test_credentials_and_kms_headers_are_dropped() -> None:
    head = (
        b"PUT /bucket/key HTTP/1.1\r\n"
        b"Host: 127.0.0.1:9000\r\n"
        b"Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request\r\n"
        b"X-Amz-Security-Token: token\r\n"
        b"x-amz-server-side-encryption: aws:kms\r\n"
        b"X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id: key\r\n"
        b"Connection: keep-alive\r\n"
        b"Content-Length: 5\r\n"
        b"x-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\r\n"
    )
    assert rewrite_head(head) == (
        b"PUT /bucket/key HTTP/1.1\r\n"
        b"Host: 127.0.0.1:9000\r\n"
        b"Content-Length: 5\r\n"
        b"x-amz-content-sha256: UNSIGNED-PAYLOAD\r\n"
        b"Connection: close\r\n\r\n"
    )


def test_presigned_query_parameters_are_dropped_and_others_kept() -> None:
    head = (
        b"GET /b/k?versionId=3&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%2Fb"
        b"&X-Amz-Signature=ff&X-Amz-Expires=60 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert rewrite_head(head).split(b"\r\n")[0] == b"GET /b/k?versionId=3 HTTP/1.1"
    only_auth = b"GET /b/k?Signature=x&AWSAccessKeyId=y&Expires=1 HTTP/1.1\r\n\r\n"
    assert rewrite_head(only_auth).split(b"\r\n")[0] == b"GET /b/k HTTP/1.1"
