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

Events are numbered from 0 in each stream (tokens of GetLogEvents are those numbers). Memory:
16 bytes per line (where it ends, when it was written) of the streams a Logs call has asked
for, indexed then; messages are read from the file.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from pathlib import Path

ENDPOINTS_PREFIX = "/aws/sagemaker/Endpoints/"
TRANSFORM_JOBS_GROUP = "/aws/sagemaker/TransformJobs"
# Transform jobs' instance logs, under the logs directory beside the endpoints' ("_" starts no
# endpoint name, so no endpoint's directory is this one).
TRANSFORM_LOGS = "_transform-jobs"
MAX_READ_BYTES = 16 * 1024 * 1024  # a look reads a file's new bytes this much at a time
READ_BLOCK_LINES = 4096  # lines read from a file at once when messages are asked for

# A group source names log groups and the directory holding each one's streams, laid out as
# <dir>/<a>/<b>.log -> stream "<a>/<b>". Endpoints: <logs_dir>/<endpoint>/<variant>/<id>.log.
GroupSource = Callable[[], dict[str, Path]]


def endpoint_groups(logs_dir: Path) -> GroupSource:
    """``/aws/sagemaker/Endpoints/<endpoint>``, streams ``<variant>/<instance-id>``."""

    def groups() -> dict[str, Path]:
        if not logs_dir.is_dir():
            return {}
        return {
            ENDPOINTS_PREFIX + d.name: d
            for d in logs_dir.iterdir()
            if d.is_dir() and d.name != TRANSFORM_LOGS
        }

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
    """One log file, where each line ends and when it was written, and its sidecar of times.

    Only 16 bytes per line stay in memory (end offset and timestamp, in arrays); messages are
    read from the file when asked for."""

    name: str
    path: Path
    ends: array[int] = field(default_factory=lambda: array("q"))  # offset after each newline
    stamps: array[int] = field(default_factory=lambda: array("q"))  # each line's timestamp
    chunks: list[tuple[int, int, int]] = field(default_factory=list)  # (end, ts, seen)
    chunk_ends: list[int] = field(default_factory=list)
    size: int = 0

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def times_path(self) -> Path:
        return self.path.with_name(self.path.name + ".times")

    @property
    def creation(self) -> int:
        return self.chunks[0][1] if self.chunks else 0

    @property
    def consumed(self) -> int:
        """Bytes turned into lines (up to the last newline)."""
        return self.ends[-1] if self.ends else 0

    def start(self, i: int) -> int:
        return self.ends[i - 1] if i > 0 else 0

    def ingestion(self, i: int) -> int:
        """When line ``i`` was first seen."""
        k = bisect.bisect_left(self.chunk_ends, self.ends[i])
        return self.chunks[min(k, len(self.chunks) - 1)][2]

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
                    self.chunk_ends.append(end)

    def refresh(self, now_ms: int, index: bool = True) -> None:
        """Note the time of bytes written since the last look; with ``index``, also where the
        new lines end (the background look only notes times: no reading, no memory)."""
        try:
            st = self.path.stat()
        except OSError:
            return
        if st.st_size < self.size:  # replaced or truncated: start over
            self.ends, self.stamps, self.chunks, self.chunk_ends = array("q"), array("q"), [], []
            self.times_path.unlink(missing_ok=True)
        self.size = st.st_size
        indexed = self.chunks[-1][0] if self.chunks else 0
        if st.st_size > indexed:
            ts = min(st.st_mtime_ns // 1_000_000, now_ms)
            ts = max(ts, self.chunks[-1][1] if self.chunks else 0)  # never backwards
            self.chunks.append((st.st_size, ts, now_ms))
            self.chunk_ends.append(st.st_size)
            with self.times_path.open("a") as f:
                f.write(f"{st.st_size} {ts} {now_ms}\n")
        if not index:
            return
        for _ in range(st.st_size // MAX_READ_BYTES + 1):  # a backlog, a block at a time
            if self.consumed >= st.st_size or not self._index(st.st_size):
                break

    def _index(self, size: int) -> bool:
        """Note where each complete line in the next block of new bytes ends, and its chunk's
        time (per chunk, not per line: a block is one or a few chunks). False: no new line."""
        base = self.consumed
        with self.path.open("rb") as f:
            f.seek(base)
            data = f.read(min(size - base, MAX_READ_BYTES))
        last = data.rfind(b"\n")
        if last < 0:
            return False
        ends = list(accumulate((len(p) + 1 for p in data[:last].split(b"\n")), initial=base))
        del ends[0]
        i, last_chunk = 0, len(self.chunks) - 1
        while i < len(ends):
            k = min(bisect.bisect_left(self.chunk_ends, ends[i]), last_chunk)
            j = len(ends) if k == last_chunk else bisect.bisect_right(ends, self.chunk_ends[k], i)
            j = max(j, i + 1)
            self.stamps.extend(repeat(self.chunks[k][1], j - i))
            i = j
        self.ends.extend(ends)
        return True

    def line_bytes(self, i: int) -> int:
        return self.ends[i] - self.start(i)

    def messages(
        self, lo: int, hi: int, needles: tuple[str, ...] = ()
    ) -> Iterator[tuple[int, str]]:
        """Lines ``lo <= i < hi``, read from the file a block at a time; with ``needles``, only
        lines of blocks holding all of them that hold the first (others may come too)."""
        if lo >= hi:
            return
        with self.path.open("rb") as f:
            i = lo
            while i < hi:
                j = min(hi, i + READ_BLOCK_LINES)
                f.seek(self.start(i))
                data = f.read(self.ends[j - 1] - 1 - self.start(i))  # without the last newline
                text = data.decode(errors="replace")
                if not needles:
                    for k, line in enumerate(text.split("\n")):
                        yield i + k, line.removesuffix("\r")
                elif all(n in text for n in needles):
                    yield from _lines_with(text, needles[0], i)
                i = j

    def event(self, i: int, message: str) -> Event:
        return Event(self.stamps[i], self.ingestion(i), message)

    def events(self, lo: int, hi: int) -> Iterator[tuple[int, Event]]:
        for i, message in self.messages(lo, hi):
            yield i, self.event(i, message)

    def between(self, start: int | None, end: int | None) -> tuple[int, int]:
        """The lines with ``start <= timestamp < end``, as the index range [lo, hi)."""
        lo = 0 if start is None else bisect.bisect_left(self.stamps, start)
        hi = len(self.ends) if end is None else bisect.bisect_left(self.stamps, end)
        return lo, max(lo, hi)


def _lines_with(text: str, needle: str, first: int) -> Iterator[tuple[int, str]]:
    """The lines of ``text`` (numbered from ``first``) that contain ``needle``."""
    counted, k = 0, first
    pos = text.find(needle)
    while pos >= 0:
        start = text.rfind("\n", 0, pos) + 1
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        k += text.count("\n", counted, start)
        counted = start
        yield k, text[start:end].removesuffix("\r")
        pos = text.find(needle, end)


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

    def streams(self, root: Path, index: bool = True) -> list[Stream]:
        """A group's streams, each brought up to date, by name."""
        with self._lock:
            now = int(self.clock() * 1000)
            found = []
            for path in sorted(_files(root)):
                stream = self._stream(root, path)
                stream.refresh(now, index)
                found.append(stream)
            return found

    def refresh_all(self) -> None:
        """The background look: the time of every line written since the last one (lines are
        indexed when a Logs call asks for their stream)."""
        for root in self.groups().values():
            self.streams(root, index=False)

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
        # An instance with several containers: one stream per container,
        # <variant>/<instance-id>/<container> (controller/pipelines.py).
        yield from root.glob("*/*/*.log")
