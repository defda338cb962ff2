"""AWS Signature Version 4 verification, with botocore's signer computing what the signature
should be.

The canonical request and the string to sign come from ``botocore.auth.SigV4Auth`` (or
``S3SigV4Auth``, which leaves S3 paths unnormalised, and ``S3SigV4QueryAuth`` for presigned
URLs, whose payload is ``UNSIGNED-PAYLOAD``) over an ``AWSRequest`` rebuilt from the received
request: its method, raw path and raw query, and exactly the headers the client listed in
``SignedHeaders``. The signing key (four HMACs of the secret, date, region and service) is
derived here and cached; the final HMAC is compared with ``hmac.compare_digest``.

What is checked, in order (each failure raises an ``errors.AuthFailure`` with AWS's code):

- an ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``
  header, or the ``X-Amz-*`` query parameters of a presigned URL (``MissingAuthenticationToken``
  when neither, ``IncompleteSignature`` when malformed);
- the access key exists (``UnrecognizedClientException``; S3: ``InvalidAccessKeyId``);
- ``X-Amz-Date`` (or ``Date``) within 15 minutes of now, and the scope's date the same day
  (``InvalidSignatureException: Signature expired``; S3: ``RequestTimeTooSkewed``); a presigned
  URL until ``X-Amz-Expires`` has passed (S3: ``AccessDenied: Request has expired``);
- the scope's region is the server's and its service one this API answers to
  (``InvalidSignatureException``; S3: ``AuthorizationHeaderMalformed``);
- ``host`` is signed;
- the payload: ``x-amz-content-sha256`` as the client declared it (a hex SHA-256,
  ``UNSIGNED-PAYLOAD``, or a streaming form such as ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``),
  else the SHA-256 of the body. Where the server holds the body (every API but S3) a declared
  hash must match it; for ``aws-chunked`` uploads only the seed signature (this one) is
  checked, not each chunk's;
- the signature itself (``InvalidSignatureException``; S3: ``SignatureDoesNotMatch``).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import (
    UNSIGNED_PAYLOAD,
    HmacV1QueryAuth,
    S3SigV4Auth,
    S3SigV4QueryAuth,
    SigV4Auth,
    SigV4QueryAuth,
)
from botocore.awsrequest import HTTPHeaders
from botocore.credentials import Credentials

from modelhost.auth.keys import AccessKey, KeyRing
from modelhost.errors import (
    IncompleteSignature,
    InvalidSignatureException,
    MissingAuthenticationToken,
    UnrecognizedClientException,
)

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_S = 15 * 60
MAX_EXPIRES_S = 7 * 24 * 3600
_HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = re.compile(r"([0-9]{8})T([0-9]{6})Z")
_KEY_CACHE_MAX = 4096
SIGNATURE_PARAM = "X-Amz-Signature"


@dataclass(frozen=True)
class Received:
    """A request as it came: method, raw path and query (percent-encoded as sent), headers
    with lower-case names, and the body when the server holds it (None: the S3 relay, which
    streams it)."""

    method: str
    path: str
    query: str
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes | None


@dataclass(frozen=True)
class _Auth:
    key_id: str
    date: str  # the scope's yyyymmdd
    region: str
    service: str
    signed: tuple[str, ...]
    signature: str
    amz_date: str
    expires: int | None  # presigned URLs


class Verifier:
    """Verifies requests against a ``KeyRing``; one per server (the derived keys are cached)."""

    def __init__(self, keys: KeyRing, region: str, clock: Callable[[], float] = time.time):
        self.keys = keys
        self.region = region
        self.clock = clock
        self._signing_keys: dict[tuple[str, str, str, str], bytes] = {}
        self._signers: dict[tuple[str, str, bool, bool], SigV4Auth] = {}
        self._targets: dict[tuple[str, str, bool], tuple[str, str]] = {}
        self._names: dict[tuple[str, ...], str] = {}
        self._creds = Credentials("modelhost", "unused")  # the secret comes from the key

    def verify(self, req: Received, services: frozenset[str], s3: bool = False) -> AccessKey:
        """The key that signed ``req``, or an ``AuthFailure``. ``services``: the signing names
        this API answers to; ``s3``: the S3 rules (unnormalised path, declared payload hash)."""
        headers = _Headers(req.headers)
        authorization = headers.get("authorization")
        if s3 and authorization is None and "AWSAccessKeyId=" in req.query:
            return self._verify_v2_query(req)
        auth = _from_header(authorization, headers, s3) if authorization is not None else None
        if auth is None:
            auth = _from_query(req.query, s3)
        key = self.keys.lookup(auth.key_id)
        if key is None:
            raise UnrecognizedClientException(
                "The security token included in the request is invalid."
            )
        self._check_time(auth, s3)
        self._check_scope(auth, services, s3)
        if "host" not in auth.signed:
            raise InvalidSignatureException("'Host' must be a signed header.")
        expected = self._signature(req, headers, auth, key, s3)
        if not _same(expected, auth.signature):
            raise InvalidSignatureException(
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method. Consult the service "
                "documentation for details."
            )
        return key

    def _verify_v2_query(self, req: Received) -> AccessKey:
        """An S3 presigned URL of the older form (``AWSAccessKeyId``, ``Signature``,
        ``Expires``: what boto3's ``generate_presigned_url`` makes for S3 unless told
        ``signature_version="s3v4"``), checked with botocore's ``HmacV1QueryAuth``."""
        params = dict(parse_qsl(req.query, keep_blank_values=True))
        key = self.keys.lookup(params.get("AWSAccessKeyId", ""))
        if key is None:
            raise UnrecognizedClientException(
                "The security token included in the request is invalid."
            )
        expires = params.get("Expires", "")
        if not _digits(expires) or "Signature" not in params:
            raise IncompleteSignature("Query-string authentication requires Signature and Expires")
        if self.clock() > int(expires):
            raise InvalidSignatureException(
                "Request has expired", s3_code="AccessDenied", s3_message="Request has expired"
            )
        signer = _HmacV1Query(Credentials(key.access_key_id, key.secret), expires)
        signed: Any = HTTPHeaders()
        for name, value in params.items():
            lower = name.lower()
            if lower.startswith("x-amz-") or lower in ("content-md5", "content-type"):
                signed[lower] = value
        query = "&".join(p for p in req.query.split("&") if p.partition("=")[0] not in _V2_PARAMS)
        split = urlsplit("http://modelhost" + req.path + ("?" + query if query else ""))
        canonical = signer.canonical_string(req.method, split, signed)
        if not _same(signer.sign_string(canonical), params["Signature"]):
            raise InvalidSignatureException("The request signature we calculated does not match.")
        return key

    def _check_time(self, auth: _Auth, s3: bool) -> None:
        when = _epoch(auth.amz_date)
        if auth.amz_date[:8] != auth.date:
            raise InvalidSignatureException(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                f"from HTTP: '{auth.date}' != '{auth.amz_date[:8]}', from '{auth.amz_date}'."
            )
        now = self.clock()
        if auth.expires is not None and now > when + auth.expires:
            raise InvalidSignatureException(
                f"Signature expired: {auth.amz_date} + {auth.expires} s is before now.",
                s3_code="AccessDenied",
                s3_message="Request has expired",
            )
        past = auth.expires is None and when < now - MAX_SKEW_S
        if past or when > now + MAX_SKEW_S:
            stamp, edge = _stamp(now), _stamp(now - MAX_SKEW_S if past else now + MAX_SKEW_S)
            message = (
                f"Signature expired: {auth.amz_date} is now earlier than {edge} ({stamp} - 15 min.)"
                if past
                else f"Signature not yet current: {auth.amz_date} is still later than {edge} "
                f"({stamp} + 15 min.)"
            )
            raise InvalidSignatureException(
                message,
                s3_code="RequestTimeTooSkewed",
                s3_message="The difference between the request time and the current time is "
                "too large.",
            )

    def _check_scope(self, auth: _Auth, services: frozenset[str], s3: bool) -> None:
        if auth.region != self.region:
            raise InvalidSignatureException(
                f"Credential should be scoped to a valid region, not '{auth.region}'. ",
                s3_code="AuthorizationHeaderMalformed",
                s3_message=f"The authorization header is malformed; the region '{auth.region}' "
                f"is wrong; expecting '{self.region}'",
            )
        if auth.service not in services:
            wanted = sorted(services)[0]
            raise InvalidSignatureException(
                f"Credential should be scoped to correct service: '{wanted}'. ",
                s3_code="AuthorizationHeaderMalformed",
                s3_message=f"The authorization header is malformed; the service "
                f"'{auth.service}' is wrong; expecting '{wanted}'",
            )

    def _signature(
        self, req: Received, headers: _Headers, auth: _Auth, key: AccessKey, s3: bool
    ) -> str:
        to_sign = self.string_to_sign(req, headers, auth, s3)
        signing_key = self._signing_key(key.secret, auth.date, auth.region, auth.service)
        return hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()

    def string_to_sign(self, req: Received, headers: _Headers, auth: _Auth, s3: bool) -> str:
        """SigV4's string to sign for ``req``, assembled from botocore's helpers: the same six
        lines as ``SigV4Auth.canonical_request`` (tests/unit/test_sigv4.py holds the two
        equal), without building an ``AWSRequest`` per request."""
        signer = self._signer(auth, s3)
        signed = _Signed()
        for name in auth.signed:
            signed[name] = headers.all(name)
        path, query = self._target(req, auth, s3, signer)
        names = self._names.get(auth.signed)
        if names is None:  # botocore's SignedHeaders line, the same for a client's requests
            names = self._names[auth.signed] = signer.signed_headers(signed)
        canonical = "\n".join(
            (
                req.method.upper(),
                path,
                query,
                signer.canonical_headers(signed) + "\n",
                names,
                self._payload(req, headers, auth, s3),
            )
        )
        helper: Any = signer  # botocore's typing wants an AWSRequest; these read only a little
        return str(helper.string_to_sign(_Context(auth.amz_date), canonical))

    def _target(self, req: Received, auth: _Auth, s3: bool, signer: SigV4Auth) -> tuple[str, str]:
        """The canonical path and query (botocore's), cached: they repeat request after
        request on the hot path."""
        memo = (req.path, req.query, s3)
        found = self._targets.get(memo)
        if found is None:
            query = req.query
            if auth.expires is not None:
                query = "&".join(
                    p for p in query.split("&") if p.partition("=")[0] != SIGNATURE_PARAM
                )
            url = urlsplit("http://modelhost" + req.path + ("?" + query if query else ""))
            helper: Any = signer
            found = (helper._normalize_url_path(url.path), helper._canonical_query_string_url(url))
            if len(self._targets) >= _KEY_CACHE_MAX:
                self._targets.clear()
            if auth.expires is None:  # presigned query strings never repeat
                self._targets[memo] = found
        return found

    def _payload(self, req: Received, headers: _Headers, auth: _Auth, s3: bool) -> str:
        declared = headers.get("x-amz-content-sha256")
        if declared is not None and "x-amz-content-sha256" in auth.signed:
            if req.body is not None and _HEX64.fullmatch(declared):
                actual = hashlib.sha256(req.body).hexdigest()
                if not hmac.compare_digest(actual, declared):
                    raise InvalidSignatureException(
                        "The provided 'x-amz-content-sha256' header does not match what was "
                        "computed.",
                        s3_code="XAmzContentSHA256Mismatch",
                    )
            return declared
        if auth.expires is not None and s3:
            return UNSIGNED_PAYLOAD  # S3SigV4QueryAuth.payload
        return hashlib.sha256(req.body or b"").hexdigest()

    def _signer(self, auth: _Auth, s3: bool) -> SigV4Auth:
        memo = (auth.service, auth.region, s3, auth.expires is not None)
        found = self._signers.get(memo)
        if found is None:
            if auth.expires is not None:
                query_kind = S3SigV4QueryAuth if s3 else SigV4QueryAuth
                found = query_kind(self._creds, auth.service, auth.region)
            else:
                found = (S3SigV4Auth if s3 else SigV4Auth)(self._creds, auth.service, auth.region)
            self._signers[memo] = found
        return found

    def _signing_key(self, secret: str, date: str, region: str, service: str) -> bytes:
        cache_key = (secret, date, region, service)
        found = self._signing_keys.get(cache_key)
        if found is None:
            if len(self._signing_keys) >= _KEY_CACHE_MAX:
                self._signing_keys.clear()
            found = signing_key(secret, date, region, service)
            self._signing_keys[cache_key] = found
        return found


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison; ``given`` may hold any characters (bytes compare them all)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """SigV4's derived key (the same four HMACs as ``SigV4Auth.signature``)."""
    k = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


_V2_PARAMS = frozenset({"AWSAccessKeyId", "Signature", "Expires"})


class _HmacV1Query(HmacV1QueryAuth):
    """botocore's SigV2 query signer with the URL's own ``Expires`` as its date."""

    def __init__(self, credentials: Credentials, expires: str) -> None:
        super().__init__(credentials)
        self._expires_at = expires

    def _get_date(self) -> str:
        return self._expires_at


class _Signed(dict[str, list[str]]):
    """The signed headers, in the form ``SigV4Auth.canonical_headers`` reads them."""

    def get_all(self, name: str) -> list[str]:
        return self[name]


@dataclass(frozen=True)
class _Context:
    """What ``SigV4Auth.string_to_sign`` reads of a request: its timestamp."""

    timestamp: str

    @property
    def context(self) -> dict[str, str]:
        return {"timestamp": self.timestamp}


class _Headers:
    """The request's headers by lower-case name, decoded only when asked for."""

    __slots__ = ("_first", "_raw")

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        self._first = dict(raw)
        self._raw = raw if len(self._first) != len(raw) else None  # only with repeats

    def get(self, name: str) -> str | None:
        value = self._first.get(name.encode())
        return None if value is None else value.decode("latin-1")

    def all(self, name: str) -> list[str]:
        """Every value of ``name``, in order (SigV4 joins them with commas)."""
        key = name.encode()
        if self._raw is None:
            value = self._first.get(key)
            return [] if value is None else [value.decode("latin-1")]
        return [v.decode("latin-1") for k, v in self._raw if k == key]


_parsed: dict[str, tuple[str, str]] = {}


def _from_header(value: str, headers: _Headers, s3: bool) -> _Auth:
    """The ``Authorization`` header's parts; what comes before ``Signature=`` (credential and
    signed headers) is the same for a client's requests all day, so its parse is remembered."""
    head, sep, signature = value.rpartition("Signature=")
    found = _parsed.get(head) if sep else None
    if found is None:
        credential, signed, signature = _parse_authorization(value, s3)
        if len(_parsed) >= _KEY_CACHE_MAX:
            _parsed.clear()
        if sep and "Signature=" + signature == value[len(head) :]:
            _parsed[head] = (credential, signed)
    else:
        credential, signed = found
        signature = signature.strip().rstrip(",")
    date = headers.get("x-amz-date") or _from_http_date(headers.get("date"))
    if not date:
        raise IncompleteSignature(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    return _auth(credential, signed, signature, date, None)


def _parse_authorization(value: str, s3: bool) -> tuple[str, str, str]:
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignature(
            f"Unsupported AWS 'algorithm': '{algorithm}'; use {ALGORITHM}.",
            s3_code="InvalidArgument" if s3 else None,
        )
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, val = item.strip().partition("=")
        if sep:
            parts[name] = val
    missing = [p for p in ("Credential", "SignedHeaders", "Signature") if p not in parts]
    if missing:
        raise IncompleteSignature(
            " ".join(f"Authorization header requires '{p}' parameter." for p in missing)
            + f" Authorization={value.split(' Signature=')[0]}"
        )
    return parts["Credential"], parts["SignedHeaders"], parts["Signature"]


def _from_query(query: str, s3: bool) -> _Auth:
    params = dict(parse_qsl(query, keep_blank_values=True)) if "X-Amz-" in query else {}
    if "X-Amz-Algorithm" not in params and "X-Amz-Credential" not in params:
        raise MissingAuthenticationToken(
            "Missing Authentication Token", s3_code="AccessDenied", s3_message="Access Denied"
        )
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise IncompleteSignature("X-Amz-Algorithm only supports 'AWS4-HMAC-SHA256'.")
    missing = [
        p
        for p in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", SIGNATURE_PARAM)
        if p not in params
    ]
    if missing:
        raise IncompleteSignature("Query-string authentication requires " + ", ".join(missing))
    raw_expires = params.get("X-Amz-Expires", str(MAX_EXPIRES_S))
    if not _digits(raw_expires) or int(raw_expires) > MAX_EXPIRES_S:
        raise IncompleteSignature(
            f"X-Amz-Expires must be a number of seconds from 0 to {MAX_EXPIRES_S}."
        )
    return _auth(
        params["X-Amz-Credential"],
        params["X-Amz-SignedHeaders"],
        params[SIGNATURE_PARAM],
        params["X-Amz-Date"],
        int(raw_expires),
    )


def _auth(credential: str, signed: str, signature: str, date: str, expires: int | None) -> _Auth:
    scope = credential.split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not scope[0]:
        raise IncompleteSignature(
            f"Credential should be of the form <key id>/<date>/<region>/<service>/aws4_request, "
            f"not '{credential}'."
        )
    try:
        if not _AMZ_DATE.fullmatch(date):
            raise ValueError(date)
        _epoch(date)
    except ValueError:
        raise IncompleteSignature(f"Date must be in ISO-8601 basic format, not '{date}'.") from None
    names = tuple(signed.split(";")) if signed else ()
    return _Auth(scope[0], scope[1], scope[2], scope[3], names, signature, date, expires)


_epochs: dict[str, float] = {}


def _epoch(amz_date: str) -> float:
    """Seconds since the epoch of a ``yyyymmddThhmmssZ`` date (remembered: dates repeat)."""
    found = _epochs.get(amz_date)
    if found is None:
        d, t = amz_date[:8], amz_date[9:15]
        parts = (int(d[:4]), int(d[4:6]), int(d[6:8]), int(t[:2]), int(t[2:4]), int(t[4:6]))
        if not (1 <= parts[1] <= 12 and 1 <= parts[2] <= 31):
            raise ValueError(amz_date)
        found = float(calendar.timegm((*parts, 0, 0, 0)))
        if len(_epochs) >= _KEY_CACHE_MAX:
            _epochs.clear()
        _epochs[amz_date] = found
    return found


def _stamp(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def _from_http_date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        parsed = time.strptime(value.strip(), "%a, %d %b %Y %H:%M:%S GMT")
    except ValueError:
        return None
    return time.strftime("%Y%m%dT%H%M%SZ", parsed)
