"""Where a multi-model request goes and which models make room: pure functions over snapshots
of what each instance holds (no I/O, no clock: ``now`` is passed in)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# A model unloaded and loaded again within this long counts as thrash.
THRASH_WINDOW_S = 60.0


@dataclass(slots=True)
class HeldModel:
    """A model loaded (or loading) on one instance."""

    target: str
    cost: int  # bytes: the resident memory its load added
    last_used: float
    in_flight: int = 0
    loaded: bool = True  # False while its load is under way


@dataclass(slots=True)
class InstanceModels:
    """What one instance holds, and its memory budget for models."""

    instance_id: str
    budget: int
    models: dict[str, HeldModel] = field(default_factory=dict)

    @property
    def used(self) -> int:
        return sum(m.cost for m in self.models.values())

    @property
    def room(self) -> int:
        return self.budget - self.used


def holders(instances: Sequence[InstanceModels], target: str) -> list[InstanceModels]:
    """The instances that have ``target`` loaded and ready."""
    out = []
    for inst in instances:
        held = inst.models.get(target)
        if held is not None and held.loaded:
            out.append(inst)
    return out


def least_busy(
    instances: Sequence[InstanceModels], in_flight: Callable[[str], int]
) -> InstanceModels:
    """Among instances holding the model: the one with the fewest requests in flight."""
    return min(instances, key=lambda inst: in_flight(inst.instance_id))


def for_load(
    instances: Sequence[InstanceModels], in_flight: Callable[[str], int]
) -> InstanceModels:
    """Where to load a model no instance holds: the one with the most room (free budget, then
    what idle models would free), ties to the fewest requests in flight."""

    def key(inst: InstanceModels) -> tuple[int, int, int]:
        idle = sum(m.cost for m in inst.models.values() if _idle(m))
        return (-inst.room, -(inst.room + idle), in_flight(inst.instance_id))

    return min(instances, key=key)


def evictions(inst: InstanceModels, needed: int, keep: str | None = None) -> list[str]:
    """The idle models to unload, least recently used first, so that ``needed`` more bytes fit
    the budget (as many as can go, if not all can). Models in flight or loading, and ``keep``,
    never go."""
    excess = inst.used + needed - inst.budget
    if excess <= 0:
        return []
    out: list[str] = []
    for held in sorted(inst.models.values(), key=lambda m: m.last_used):
        if excess <= 0:
            break
        if _idle(held) and held.target != keep:
            out.append(held.target)
            excess -= held.cost
    return out


def estimate(inst: InstanceModels, known: int | None, fallback: int) -> int:
    """A model's expected cost before it loads: what it cost last time, else the mean of the
    instance's models, else ``fallback`` (its size on disk)."""
    if known is not None:
        return known
    costs = [m.cost for m in inst.models.values() if m.loaded]
    return sum(costs) // len(costs) if costs else fallback


def thrashed(unloaded_at: float | None, now: float) -> bool:
    """A load of a model unloaded less than THRASH_WINDOW_S ago."""
    return unloaded_at is not None and now - unloaded_at < THRASH_WINDOW_S


def _idle(held: HeldModel) -> bool:
    return held.loaded and held.in_flight == 0
