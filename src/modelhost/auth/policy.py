"""What a key may do: a pure function of its policy and the request's action.

- ``admin``: everything.
- ``invoke``: InvokeEndpoint, InvokeEndpointWithResponseStream and InvokeEndpointAsync only;
  with endpoint patterns (shell-style, ``fnmatch``: ``prod-*``), only on endpoints whose name
  matches one of them.
- ``read-only``: operations named ``Describe*``, ``List*``, ``Get*`` (``GetCallerIdentity``,
  ``GetMetricData``, ``/metrics`` ...) and ``FilterLogEvents``; on S3, ``GET`` and ``HEAD``
  (reading objects and listing buckets).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

KINDS = ("admin", "invoke", "read-only")
INVOKE_OPERATIONS = frozenset(
    {"InvokeEndpoint", "InvokeEndpointWithResponseStream", "InvokeEndpointAsync"}
)
READ_PREFIXES = ("Describe", "List", "Get")
READ_OPERATIONS = frozenset({"FilterLogEvents"})
S3_READ_METHODS = frozenset({"GET", "HEAD"})
S3 = "s3"


@dataclass(frozen=True)
class Policy:
    kind: str
    endpoints: tuple[str, ...] = ()  # invoke only: name patterns; empty: every endpoint

    @classmethod
    def parse(cls, kind: str, endpoints: tuple[str, ...] = ()) -> Policy:
        if kind not in KINDS:
            raise ValueError(f"unknown policy {kind!r}: choose one of {', '.join(KINDS)}")
        if endpoints and kind != "invoke":
            raise ValueError("endpoint patterns apply to the invoke policy only")
        return cls(kind, endpoints)

    def describe(self) -> str:
        if self.endpoints:
            return f"{self.kind} ({', '.join(self.endpoints)})"
        return self.kind


@dataclass(frozen=True)
class Action:
    """What a request asks for: the service (its SigV4 signing name), the operation (for S3
    the HTTP method) and, for the runtime API, the endpoint's name."""

    service: str
    operation: str
    endpoint: str | None = None


def allows(policy: Policy, action: Action) -> bool:
    if policy.kind == "admin":
        return True
    if policy.kind == "invoke":
        if action.operation not in INVOKE_OPERATIONS or action.service == S3:
            return False
        if not policy.endpoints:
            return True
        name = action.endpoint or ""
        return any(fnmatchcase(name, pattern) for pattern in policy.endpoints)
    if policy.kind == "read-only":
        if action.service == S3:
            return action.operation in S3_READ_METHODS
        op = action.operation
        return op.startswith(READ_PREFIXES) or op in READ_OPERATIONS
    return False
