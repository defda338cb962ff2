"""Key policies: a pure function of the policy and the action."""

from __future__ import annotations

import pytest

from modelhost.auth.policy import Action, Policy, allows

ADMIN = Policy.parse("admin")
INVOKE = Policy.parse("invoke")
INVOKE_PROD = Policy.parse("invoke", ("prod-*", "canary"))
READ = Policy.parse("read-only")


@pytest.mark.parametrize(
    ("policy", "action", "allowed"),
    [
        (ADMIN, Action("sagemaker", "CreateEndpoint"), True),
        (ADMIN, Action("s3", "PUT"), True),
        (INVOKE, Action("sagemaker", "InvokeEndpoint", "any"), True),
        (INVOKE, Action("sagemaker", "InvokeEndpointWithResponseStream", "any"), True),
        (INVOKE, Action("sagemaker", "InvokeEndpointAsync", "any"), True),
        (INVOKE, Action("sagemaker", "DescribeEndpoint"), False),
        (INVOKE, Action("sts", "GetCallerIdentity"), False),
        (INVOKE, Action("s3", "GET"), False),
        (INVOKE_PROD, Action("sagemaker", "InvokeEndpoint", "prod-iris"), True),
        (INVOKE_PROD, Action("sagemaker", "InvokeEndpoint", "canary"), True),
        (INVOKE_PROD, Action("sagemaker", "InvokeEndpoint", "canary-2"), False),
        (INVOKE_PROD, Action("sagemaker", "InvokeEndpoint", "dev-iris"), False),
        (INVOKE_PROD, Action("sagemaker", "InvokeEndpoint", None), False),
        (READ, Action("sagemaker", "DescribeEndpoint"), True),
        (READ, Action("sagemaker", "ListModels"), True),
        (READ, Action("sts", "GetCallerIdentity"), True),
        (READ, Action("logs", "FilterLogEvents"), True),
        (READ, Action("monitoring", "GetMetricData"), True),
        (READ, Action("sagemaker", "GetMetrics"), True),
        (READ, Action("sagemaker", "CreateModel"), False),
        (READ, Action("sagemaker", "DeleteEndpoint"), False),
        (READ, Action("sagemaker", "InvokeEndpoint", "x"), False),
        (READ, Action("monitoring", "PutMetricData"), False),
        (READ, Action("s3", "GET"), True),
        (READ, Action("s3", "HEAD"), True),
        (READ, Action("s3", "PUT"), False),
        (READ, Action("s3", "DELETE"), False),
        (READ, Action("s3", "POST"), False),
        (READ, Action("sagemaker", ""), False),
    ],
)
def test_allows(policy: Policy, action: Action, allowed: bool) -> None:
    assert allows(policy, action) is allowed


def test_parse_refuses_unknown_policies_and_misplaced_patterns() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        Policy.parse("root")
    with pytest.raises(ValueError, match="invoke policy only"):
        Policy.parse("admin", ("x*",))
    assert INVOKE_PROD.describe() == "invoke (prod-*, canary)"
