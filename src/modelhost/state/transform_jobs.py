"""Transform jobs as the store keeps them: the request (PascalCase, for Describe) beside the
typed plan the runner reads (``TransformPlan``, translated once at create by
api/operations/transform_jobs.py), the status, and which input files are done (a restart
resumes after them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelhost.state.records import DeployedContainer
from modelhost.state.store import Store

KIND = "transform_job"


class TransformStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"


FINAL = frozenset({TransformStatus.COMPLETED, TransformStatus.FAILED, TransformStatus.STOPPED})


@dataclass(frozen=True, slots=True)
class TransformPlan:
    """Everything the runner needs, typed. None means "not set in the request" where the
    container's /execution-parameters or the defaults may decide (precedence: request >
    container > defaults)."""

    model_name: str
    container: DeployedContainer
    instance_type: str
    instance_count: int
    input_uri: str
    manifest: bool  # S3DataType ManifestFile (else S3Prefix)
    output_path: str
    content_type: str | None = None
    gzip: bool = False
    split: str = "None"  # None | Line | RecordIO | TFRecord
    accept: str | None = None
    assemble_lines: bool = False  # AssembleWith Line
    max_concurrent: int | None = None
    max_payload_mb: int | None = None
    strategy: str | None = None  # MultiRecord | SingleRecord
    timeout_s: float = 600.0
    retries: int = 3
    environment: dict[str, str] = field(default_factory=dict)
    input_filter: str | None = None
    output_filter: str | None = None
    join_input: bool = False
    # A serial inference pipeline's containers after the first (each record goes through all).
    pipeline: tuple[DeployedContainer, ...] = ()

    def to_doc(self) -> dict[str, Any]:
        doc = {name: getattr(self, name) for name in self.__slots__}
        doc["container"] = self.container.to_doc()
        doc["pipeline"] = [c.to_doc() for c in self.pipeline]
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> TransformPlan:
        values = dict(doc)
        values["container"] = DeployedContainer.from_doc(doc["container"])
        values["pipeline"] = tuple(map(DeployedContainer.from_doc, doc.get("pipeline", ())))
        values["environment"] = dict(doc.get("environment", {}))
        return cls(**values)


@dataclass(slots=True)
class TransformJob:
    name: str
    arn: str
    status: TransformStatus
    created: float
    modified: float
    request: dict[str, Any]  # as validated, for DescribeTransformJob
    plan: TransformPlan
    failure_reason: str | None = None
    started: float | None = None
    ended: float | None = None
    done: list[str] = field(default_factory=list)  # input files whose output is published
    files_total: int | None = None
    records_done: int = 0

    def to_doc(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arn": self.arn,
            "status": self.status.value,
            "created": self.created,
            "modified": self.modified,
            "request": self.request,
            "plan": self.plan.to_doc(),
            "failure_reason": self.failure_reason,
            "started": self.started,
            "ended": self.ended,
            "done": self.done,
            "files_total": self.files_total,
            "records_done": self.records_done,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> TransformJob:
        return cls(
            name=doc["name"],
            arn=doc["arn"],
            status=TransformStatus(doc["status"]),
            created=doc["created"],
            modified=doc["modified"],
            request=doc["request"],
            plan=TransformPlan.from_doc(doc["plan"]),
            failure_reason=doc.get("failure_reason"),
            started=doc.get("started"),
            ended=doc.get("ended"),
            done=list(doc.get("done", [])),
            files_total=doc.get("files_total"),
            records_done=doc.get("records_done", 0),
        )


def get_job(store: Store, name: str) -> TransformJob | None:
    doc = store.get(KIND, name)
    return None if doc is None else TransformJob.from_doc(doc)


def all_jobs(store: Store) -> list[TransformJob]:
    return [TransformJob.from_doc(d) for d in store.all(KIND)]


def add_job(store: Store, job: TransformJob) -> None:
    """Raises store.Duplicate when the name was ever used."""
    store.insert(KIND, job.name, job.created, job.to_doc())


def update_job(store: Store, name: str, change: Any) -> Any:
    """Read-modify-write one job atomically; ``change(job)`` mutates it and returns a value
    (None when the job does not exist)."""

    def apply(doc: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        job = TransformJob.from_doc(doc)
        result = change(job)
        return job.to_doc(), result

    return store.update_doc(KIND, name, apply)
