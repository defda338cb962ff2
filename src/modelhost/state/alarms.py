"""CloudWatch metric alarms: their configuration (as PutMetricAlarm gave it, PascalCase) and their
state, as documents of kind ``metric_alarm`` in the store's generic table (like
state/scaling.py), so they survive restarts. cloudwatch/alarms_api.py writes them; the scaler's
alarm pass (controller/alarm_loop.py) updates their state."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from modelhost.state.scaling import _digest
from modelhost.state.store import Store

ALARM = "metric_alarm"
OK = "OK"
ALARMING = "ALARM"
INSUFFICIENT = "INSUFFICIENT_DATA"
STATES = (OK, ALARMING, INSUFFICIENT)


@dataclass(slots=True)
class MetricAlarm:
    name: str
    arn: str
    spec: dict[str, Any]  # PutMetricAlarm's request less AlarmName and Tags
    updated: float  # AlarmConfigurationUpdatedTimestamp
    state: str = INSUFFICIENT
    reason: str = "Unchecked: Initial alarm creation"
    reason_data: str = ""
    state_updated: float = 0.0
    transitioned: float = 0.0
    created: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def actions(self) -> list[str]:
        """The AlarmActions, when actions are enabled."""
        if not self.spec.get("ActionsEnabled", True):
            return []
        return list(self.spec.get("AlarmActions") or [])


class AlarmStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, name: str) -> MetricAlarm | None:
        doc = self.store.get(ALARM, _digest(name))
        return None if doc is None else MetricAlarm(**doc)

    def all(self) -> list[MetricAlarm]:
        """By name, as DescribeAlarms lists them."""
        return sorted((MetricAlarm(**d) for d in self.store.all(ALARM)), key=lambda a: a.name)

    def put(self, a: MetricAlarm) -> None:
        with self.store._lock:
            if self.store.get(ALARM, _digest(a.name)) is None:
                self.store.insert(ALARM, _digest(a.name), a.created, asdict(a))
            else:
                self.store.put(ALARM, _digest(a.name), asdict(a))

    def delete(self, names: list[str]) -> list[str]:
        """Deletes all of ``names`` or, when some do not exist, none; returns those missing."""
        with self.store._lock:
            missing = [n for n in names if self.store.get(ALARM, _digest(n)) is None]
            if not missing:
                for n in names:
                    self.store.delete(ALARM, _digest(n))
            return missing

    def acting_on(self, arn: str) -> list[MetricAlarm]:
        return [a for a in self.all() if arn in (a.spec.get("AlarmActions") or [])]
