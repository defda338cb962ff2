"""Application Auto Scaling's records: scalable targets, scaling policies, scaling activities.

They are documents in the store's generic table (kinds ``scalable_target``, ``scaling_policy``,
``scaling_activity``), so the store's schema does not change. A policy keeps its configuration
as the validated request (``spec``, PascalCase: Describe returns it as given) next to the
typed fields the scaler reads (api/operations/autoscaling.py fills both).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from modelhost.state.store import Store

TARGET = "scalable_target"
POLICY = "scaling_policy"
ACTIVITY = "scaling_activity"
# Activities kept per target (the oldest go first); AWS keeps six weeks of them.
MAX_ACTIVITIES = 100


@dataclass(slots=True)
class ScalableTarget:
    namespace: str
    resource_id: str  # endpoint/<ep>/variant/<v>
    dimension: str
    min: int
    max: int
    arn: str
    created: float
    role_arn: str = ""
    suspended: dict[str, bool] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return target_key(self.resource_id, self.dimension)

    @property
    def endpoint(self) -> str:
        return self.resource_id.split("/")[1]

    @property
    def variant(self) -> str:
        return self.resource_id.split("/")[3]


@dataclass(slots=True)
class ScalingPolicy:
    name: str
    arn: str
    namespace: str
    resource_id: str
    dimension: str
    policy_type: str
    created: float
    spec: dict[str, Any]  # TargetTrackingScalingPolicyConfiguration as requested
    metric: str  # what the scaler measures: a metric name of metrics.Recorder
    per_instance: bool  # divide the metric by the variant's instance count
    target: float
    scale_out_cooldown_s: float
    scale_in_cooldown_s: float
    disable_scale_in: bool
    alarms: list[dict[str, str]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return policy_key(self.resource_id, self.dimension, self.name)


@dataclass(slots=True)
class ScalingActivity:
    activity_id: str
    namespace: str
    resource_id: str
    dimension: str
    description: str
    cause: str
    start: float
    status: str  # Pending | InProgress | Successful | Overridden | Unfulfilled | Failed
    message: str = ""
    end: float | None = None
    desired: int | None = None
    scale_out: bool = True


def target_key(resource_id: str, dimension: str) -> str:
    return _digest(f"{resource_id}|{dimension}")


def policy_key(resource_id: str, dimension: str, name: str) -> str:
    return _digest(f"{resource_id}|{dimension}|{name}")


def _digest(text: str) -> str:
    """Row names are at most 64 characters; resource ids may be longer."""
    return hashlib.sha256(text.encode()).hexdigest()[:48]


class ScalingStore:
    """Typed access to the three kinds, over the store's generic documents."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # targets
    def target(self, resource_id: str, dimension: str) -> ScalableTarget | None:
        doc = self.store.get(TARGET, target_key(resource_id, dimension))
        return None if doc is None else ScalableTarget(**doc)

    def targets(self) -> list[ScalableTarget]:
        return [ScalableTarget(**d) for d in self.store.all(TARGET)]

    def put_target(self, t: ScalableTarget) -> None:
        self.store.upsert(TARGET, t.key, t.created, asdict(t))

    def delete_target(self, t: ScalableTarget) -> None:
        with self.store._lock:
            for p in self.policies():
                if target_key(p.resource_id, p.dimension) == t.key:
                    self.store.delete(POLICY, p.key)
            self.store.delete(TARGET, t.key)

    # policies
    def policy(self, resource_id: str, dimension: str, name: str) -> ScalingPolicy | None:
        doc = self.store.get(POLICY, policy_key(resource_id, dimension, name))
        return None if doc is None else ScalingPolicy(**doc)

    def policies(self) -> list[ScalingPolicy]:
        return [ScalingPolicy(**d) for d in self.store.all(POLICY)]

    def put_policy(self, p: ScalingPolicy) -> None:
        self.store.upsert(POLICY, p.key, p.created, asdict(p))

    def delete_policy(self, p: ScalingPolicy) -> None:
        self.store.delete(POLICY, p.key)

    # activities
    def activities(self) -> list[ScalingActivity]:
        """Newest first."""
        docs = self.store.all(ACTIVITY)
        return [ScalingActivity(**d) for d in reversed(docs)]

    def add_activity(self, a: ScalingActivity) -> None:
        with self.store._lock:
            self.store.insert(ACTIVITY, a.activity_id, a.start, asdict(a))
            same = [
                x
                for x in self.activities()
                if target_key(x.resource_id, x.dimension) == target_key(a.resource_id, a.dimension)
            ]
            for old in same[MAX_ACTIVITIES:]:
                self.store.delete(ACTIVITY, old.activity_id)

    def put_activity(self, a: ScalingActivity) -> None:
        self.store.put(ACTIVITY, a.activity_id, asdict(a))
