"""Records of the instance processes a server started, one small file each, so that the next
server on the same data directory stops any its predecessor left behind.

An instance gets SIGTERM when its server dies (children.die_with_parent); one that cannot act
on it (stopped, or stuck) would outlive the server, holding its port and memory. Each record
names the instance's process and the server's, each with its start time (``/proc/<pid>/stat``),
so a reused process id is never taken for either: a record whose server is gone and whose
process is still the same one is an orphan, and its process group gets SIGKILL (an instance
leads its own group). Linux only; elsewhere nothing is recorded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".pid"


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of stat(5); the first two are before the ")"


def alive(pid: int, started: int) -> bool:
    return start_time(pid) == started


class PidRecords:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.enabled = start_time(os.getpid()) is not None  # /proc is there
        if self.enabled:
            directory.mkdir(parents=True, exist_ok=True)
        self.owner = f"{os.getpid()} {start_time(os.getpid())}"

    def add(self, instance_id: str, pid: int) -> None:
        started = start_time(pid)
        if not self.enabled or started is None:
            return
        path = self.directory / f"{instance_id}{SUFFIX}"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{pid} {started} {self.owner}\n")
        os.replace(tmp, path)

    def remove(self, instance_id: str) -> None:
        if self.enabled:
            (self.directory / f"{instance_id}{SUFFIX}").unlink(missing_ok=True)

    def stop_orphans(self) -> list[int]:
        """SIGKILL the process group of every recorded instance whose server is gone and
        whose process is still running; drop their records. The process ids killed."""
        if not self.enabled:
            return []
        killed = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                pid, started, owner, owner_started = map(int, path.read_text().split())
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # half-written by a server killed meanwhile
                continue
            if alive(owner, owner_started):
                continue  # its server still runs (another command on this data directory)
            if alive(pid, started):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                    killed.append(pid)
            path.unlink(missing_ok=True)
        if killed:
            log.warning(
                "stopped %d instance process(es) a previous server left: %s", len(killed), killed
            )
        return killed
