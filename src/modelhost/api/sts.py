"""STS on the SageMaker API's port: ``GetCallerIdentity`` and ``AssumeRole`` (awsQuery wire,
api/query.py), for the SDK and tools that ask who they are before they start.

modelhost accepts any credentials, so identity is what the request claims:
``GetCallerIdentity`` answers with the configured account id, the caller's access key id as
``UserId`` and the account's root ARN; after ``AssumeRole`` (whose session token names the role
and session) it answers as that assumed role, as STS does. ``AssumeRole`` returns the caller's
own access key id; the secret key cannot be known from a signed request, so it returns a
placeholder, which modelhost and its embedded S3 server accept like any other. With access keys
(auth/) the request was verified against the caller's key, which proves the caller holds its
secret: AssumeRole then returns that secret, so the assumed credentials sign valid requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from modelhost.api.query import Caller, QueryService
from modelhost.settings import Settings

TOKEN_PREFIX = "modelhost-session:"
PLACEHOLDER_SECRET = "modelhost-accepts-any-secret"
DEFAULT_DURATION_S = 3600


def sts_service(settings: Settings) -> QueryService:
    account = settings.account_id

    def get_caller_identity(caller: Caller, _: dict[str, Any]) -> dict[str, Any]:
        role = _assumed_role(caller.session_token)
        if role is not None:
            arn, session = role
            return {
                "UserId": f"{_role_id(arn)}:{session}",
                "Account": account,
                "Arn": _assumed_role_arn(account, arn, session),
            }
        return {
            "UserId": caller.access_key_id or account,
            "Account": account,
            "Arn": f"arn:aws:iam::{account}:root",
        }

    def assume_role(caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
        arn, session = req["RoleArn"], req["RoleSessionName"]
        duration = req.get("DurationSeconds", DEFAULT_DURATION_S)
        token = json.dumps({"role": arn, "session": session}).encode()
        expires = datetime.now(UTC) + timedelta(seconds=duration)
        out: dict[str, Any] = {
            "Credentials": {
                "AccessKeyId": caller.access_key_id or "ASIAMODELHOST0000000",
                "SecretAccessKey": caller.secret or PLACEHOLDER_SECRET,
                "SessionToken": TOKEN_PREFIX + base64.urlsafe_b64encode(token).decode("ascii"),
                "Expiration": expires,
            },
            "AssumedRoleUser": {
                "AssumedRoleId": f"{_role_id(arn)}:{session}",
                "Arn": _assumed_role_arn(account, arn, session),
            },
            "PackedPolicySize": 0,
        }
        if req.get("SourceIdentity"):
            out["SourceIdentity"] = req["SourceIdentity"]
        return out

    return QueryService(
        "sts", {"GetCallerIdentity": get_caller_identity, "AssumeRole": assume_role}
    )


def _assumed_role(token: str | None) -> tuple[str, str] | None:
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.removeprefix(TOKEN_PREFIX)))
        return str(data["role"]), str(data["session"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


def _assumed_role_arn(account: str, role_arn: str, session: str) -> str:
    role_name = role_arn.rsplit("/", 1)[-1]
    return f"arn:aws:sts::{account}:assumed-role/{role_name}/{session}"


def _role_id(role_arn: str) -> str:
    """A stable role id in STS's form (``AROA`` + 17 characters)."""
    return "AROA" + hashlib.sha256(role_arn.encode()).hexdigest()[:17].upper()
