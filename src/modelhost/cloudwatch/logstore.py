"""Log events over the files instances write, with the times their lines were written.

Instance processes write their stdout and stderr straight into
``<root>/<a>/<b>.log`` (the server never sees the bytes go by), so the server timestamps them
when it first sees them: each time it looks at a file (every second from a background task,
and on every Logs API call) and finds it has grown, it appends one record
``<end offset> <mtime ms> <seen ms>`` to a sidecar file ``<b>.log.times``. Every line that
ends in the new bytes gets the file's modification time as its timestamp (the time of the
latest write, never later than the line was written by more than the look interval) and the
time it was seen as its ingestion time. One ``stat`` per file per look, one short append per
growth; the sidecar keeps the times across restarts. Bytes written while no server ran get
the file's mtime at the next start. A last line without its newline waits for it.

Events are numbered from 0 in each stream (tokens of GetLogEvents are those numbers).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ENDPOINTS_PREFIX = "/aws/sagemaker/Endpoints/"
TRANSFORM_JOBS_GROUP = "/aws/sagemaker/TransformJobs"
MAX_READ_BYTES = 64 * 1024 * 1024  # one look reads at most this much of a file

# A group source names log groups and the directory holding each one's streams, laid out as
# <dir>/<a>/<b>.log -> stream "<a>/<b>". Endpoints: <logs_dir>/<endpoint>/<variant>/<id>.log.
GroupSource = Callable[[], dict[str, Path]]


def endpoint_groups(logs_dir: Path) -> GroupSource:
    """``/aws/sagemaker/Endpoints/<endpoint>``, streams ``<variant>/<instance-id>``."""

    def groups() -> dict[str, Path]:
        if not logs_dir.is_dir():
            return {}
        return {ENDPOINTS_PREFIX + d.name: d for d in logs_dir.iterdir() if d.is_dir()}

    return groups


def transform_job_groups(root: Path) -> GroupSource:
    """The hook for batch transform: ``/aws/sagemaker/TransformJobs``, one stream per
    ``<job>/<instance-id>``, for instances that write ``<root>/<job>/<instance-id>.log``."""

    def groups() -> dict[str, Path]:
        return {TRANSFORM_JOBS_GROUP: root} if root.is_dir() else {}

    return groups


@dataclass(frozen=True, slots=True)
class Event:
    timestamp: int  # ms since the epoch
    ingestion: int
    message: str


@dataclass
class Stream:
    """One log file, its events so far and its sidecar of times."""

    name: str
    path: Path
    events: list[Event] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)  # events' timestamps, for bisect
    consumed: int = 0  # bytes turned into events (up to the last newline)
    chunks: list[tuple[int, int, int]] = field(default_factory=list)  # (end, ts, seen)
    size: int = 0

    @property
    def times_path(self) -> Path:
        return self.path.with_name(self.path.name + ".times")

    @property
    def creation(self) -> int:
        return self.chunks[0][1] if self.chunks else 0

    def load(self) -> None:
        try:
            text = self.times_path.read_text()
        except OSError:
            return
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                end, ts, seen = (int(p) for p in parts)
                if not self.chunks or end > self.chunks[-1][0]:
                    self.chunks.append((end, ts, seen))

    def refresh(self, now_ms: int) -> None:
        try:
            st = self.path.stat()
        except OSError:
            return
        if st.st_size < self.size:  # replaced or truncated: start over
            self.events, self.stamps, self.chunks, self.consumed = [], [], [], 0
            self.times_path.unlink(missing_ok=True)
        self.size = st.st_size
        indexed = self.chunks[-1][0] if self.chunks else 0
        if st.st_size > indexed:
            ts = min(st.st_mtime_ns // 1_000_000, now_ms)
            ts = max(ts, self.chunks[-1][1] if self.chunks else 0)  # never backwards
            self.chunks.append((st.st_size, ts, now_ms))
            with self.times_path.open("a") as f:
                f.write(f"{st.st_size} {ts} {now_ms}\n")
        if self.consumed < st.st_size:
            self._read(min(st.st_size, self.consumed + MAX_READ_BYTES))

    def _read(self, upto: int) -> None:
        with self.path.open("rb") as f:
            f.seek(self.consumed)
            data = f.read(upto - self.consumed)
        last = data.rfind(b"\n")
        if last < 0:
            return
        ends = [c[0] for c in self.chunks]
        offset = self.consumed
        for raw in data[: last + 1].split(b"\n")[:-1]:
            offset += len(raw) + 1
            i = min(bisect.bisect_left(ends, offset), len(self.chunks) - 1)
            _, ts, seen = self.chunks[i]
            self.events.append(Event(ts, seen, raw.decode(errors="replace").rstrip("\r")))
            self.stamps.append(ts)
        self.consumed += last + 1

    def between(self, start: int | None, end: int | None) -> tuple[int, int]:
        """The events with ``start <= timestamp < end``, as the index range [lo, hi)."""
        lo = 0 if start is None else bisect.bisect_left(self.stamps, start)
        hi = len(self.events) if end is None else bisect.bisect_left(self.stamps, end)
        return lo, max(lo, hi)


class LogCatalog:
    """Every group the sources name and its streams; thread-safe (API calls run in threads,
    the background look in another)."""

    def __init__(self, sources: list[GroupSource], clock: Callable[[], float]) -> None:
        self.sources = sources
        self.clock = clock
        self._streams: dict[Path, Stream] = {}
        self._lock = threading.Lock()

    def groups(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for source in self.sources:
            out.update(source())
        return out

    def streams(self, root: Path) -> list[Stream]:
        """A group's streams, each brought up to date, by name."""
        with self._lock:
            now = int(self.clock() * 1000)
            found = []
            for path in sorted(_files(root)):
                stream = self._stream(root, path)
                stream.refresh(now)
                found.append(stream)
            return found

    def refresh_all(self) -> None:
        """The background look: timestamps every line written since the last one."""
        for root in self.groups().values():
            self.streams(root)

    def _stream(self, root: Path, path: Path) -> Stream:
        stream = self._streams.get(path)
        if stream is None:
            name = path.relative_to(root).with_suffix("").as_posix()
            stream = self._streams[path] = Stream(name, path)
            stream.load()
        return stream


def _files(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from root.glob("*/*.log")
