"""ARN builders (pure)."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = {
    "model": "model",
    "endpoint_config": "endpoint-config",
    "endpoint": "endpoint",
    "transform_job": "transform-job",
}

# The words SageMaker uses in "Could not find ..." messages.
DISPLAY = {
    "model": "model",
    "endpoint_config": "endpoint configuration",
    "endpoint": "endpoint",
    "transform_job": "transform job",
}


@dataclass(frozen=True, slots=True)
class Arns:
    region: str
    account_id: str

    def arn(self, kind: str, name: str) -> str:
        """``arn:aws:sagemaker:<region>:<acct>:<kind>/<name>``; SageMaker lower-cases the name."""
        return f"arn:aws:sagemaker:{self.region}:{self.account_id}:{KINDS[kind]}/{name.lower()}"

    def parse(self, arn: str) -> tuple[str, str] | None:
        """The (kind, lower-cased name) an ARN of ours names, or None."""
        prefix = f"arn:aws:sagemaker:{self.region}:{self.account_id}:"
        if not arn.startswith(prefix):
            return None
        kind_part, _, name = arn[len(prefix) :].partition("/")
        for kind, word in KINDS.items():
            if word == kind_part and name:
                return kind, name
        return None

    def log_group(self, endpoint: str) -> str:
        return (
            f"arn:aws:logs:{self.region}:{self.account_id}:log-group:"
            f"/aws/sagemaker/Endpoints/{endpoint}"
        )
