"""A rolling per-minute history of the invocation metrics, kept in ``<data-dir>/metrics.db``.

Nothing is added to the InvokeEndpoint hot path: ``sample`` reads the Recorder's running
counters and histograms (every ``metrics_sample_interval_s`` and just after each minute starts,
from a background task on the router's event loop, so the read is consistent) and adds what
changed since the last sample to the bucket of the minute that interval began in; a request
lands in the minute it ran in, give or take the event loop's delay in waking at the minute
(milliseconds). A counter smaller than at the last sample (the endpoint was deleted and made
anew) counts from zero.

``flush`` writes the buckets that changed to SQLite (off the loop) and drops those older than
the retention; at start the history is read back, so it survives restarts. Queries read the
in-memory copy: a few hundred small buckets per variant.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from modelhost.cloudwatch.stats import Minute
from modelhost.metrics import Recorder, Slot

Key = tuple[str, str]  # (endpoint, variant)

_SCHEMA = """CREATE TABLE IF NOT EXISTS minutes (
  endpoint TEXT NOT NULL, variant TEXT NOT NULL, minute INTEGER NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (endpoint, variant, minute))"""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    n: int
    per_instance: float
    e4: int
    e5: int
    me: int
    model: tuple[int, ...]
    model_total: float
    overhead: tuple[int, ...]
    overhead_total: float

    @classmethod
    def of(cls, s: Slot) -> _Snapshot:
        return cls(s.invocations, s.per_instance, s.errors_4xx, s.errors_5xx, s.model_errors,
                   tuple(s.model_latency.counts), s.model_latency.total,
                   tuple(s.overhead_latency.counts), s.overhead_latency.total)  # fmt: skip

    def minus(self, o: _Snapshot | None) -> Minute:
        if o is None or self.n < o.n:
            o = _ZERO
        return Minute(self.n - o.n, self.per_instance - o.per_instance, self.e4 - o.e4,
                      self.e5 - o.e5, self.me - o.me,
                      [a - b for a, b in zip(self.model, o.model, strict=True)],
                      self.model_total - o.model_total,
                      [a - b for a, b in zip(self.overhead, o.overhead, strict=True)],
                      self.overhead_total - o.overhead_total)  # fmt: skip


_ZERO = _Snapshot.of(Slot())


class History:
    def __init__(self, path: Path, retention_minutes: int) -> None:
        self.path = path
        self.retention_minutes = retention_minutes
        self.buckets: dict[Key, dict[int, Minute]] = {}  # minute: epoch seconds // 60
        self._last: dict[Key, _Snapshot] = {}
        self._since: float | None = None  # when the last sample was taken
        self._dirty: set[tuple[str, str, int]] = set()
        self._lock = threading.Lock()  # the buckets
        self._db_lock = threading.Lock()  # the connection (a flush cancelled at shutdown runs on)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        for endpoint, variant, minute, data in self._db.execute(
            "SELECT endpoint, variant, minute, data FROM minutes"
        ):
            self.buckets.setdefault((endpoint, variant), {})[minute] = Minute.from_list(
                json.loads(data)
            )

    def sample(self, recorder: Recorder, now: float) -> None:
        """Fold what the Recorder counted since the last sample into the minute that interval
        began in (the caller samples at each minute's start, so intervals stay inside one
        minute). Runs on the event loop that records (reads of plain numbers, no awaits)."""
        minute = int((self._since if self._since is not None else now) // 60)
        self._since = now
        seen = {}
        for key, slot in list(recorder.slots.items()):
            snap = _Snapshot.of(slot)
            seen[key] = snap
            delta = snap.minus(self._last.get(key))
            if delta.n <= 0:
                continue
            with self._lock:
                bucket = self.buckets.setdefault(key, {}).setdefault(minute, Minute())
                bucket.add(delta)
                self._dirty.add((*key, minute))
        self._last = seen

    def flush(self, now: float) -> None:
        """Write the changed buckets and drop the expired ones (in a thread). One flush at a
        time, each writing what it read, so an older picture never overwrites a newer one."""
        cutoff = int(now // 60) - self.retention_minutes
        with self._db_lock:
            with self._lock:
                rows = [
                    (ep, var, m, json.dumps(self.buckets[(ep, var)][m].to_list()))
                    for ep, var, m in self._dirty
                    if m in self.buckets.get((ep, var), {})
                ]
                self._dirty.clear()
                for key in list(self.buckets):
                    minutes = self.buckets[key]
                    for m in [m for m in minutes if m <= cutoff]:
                        del minutes[m]
                    if not minutes:
                        del self.buckets[key]
            self._write(rows, cutoff)

    def _write(self, rows: list[tuple[str, str, int, str]], cutoff: int) -> None:
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO minutes (endpoint, variant, minute, data) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
            self._db.execute("DELETE FROM minutes WHERE minute <= ?", (cutoff,))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def minutes(self, key: Key, first: int, last: int) -> list[tuple[int, Minute]]:
        """Copies of the buckets of ``key`` with ``first <= minute < last``, oldest first (the
        sampler goes on adding to the current one)."""
        with self._lock:
            found = self.buckets.get(key, {})
            picked = [(m, _copy(b)) for m, b in found.items() if first <= m < last]
        return sorted(picked, key=_first)

    def keys(self) -> list[tuple[Key, int]]:
        """Every (endpoint, variant) with history, and its latest minute."""
        with self._lock:
            return [(key, max(m)) for key, m in self.buckets.items() if m]

    def close(self) -> None:
        with self._db_lock:
            self._db.close()


def _first(item: tuple[int, Minute]) -> int:
    return item[0]


def _copy(b: Minute) -> Minute:
    return replace(b, model=list(b.model), overhead=list(b.overhead))
