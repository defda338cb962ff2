"""Instance records (backends/pidfiles.py): a record whose server still runs is left alone; one
whose server is gone gets its process group killed; a reused process id is never killed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from modelhost.backends.pidfiles import PidRecords, start_time


def _child() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def _gone(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.02)
    return False


def test_only_orphans_are_stopped(tmp_path: Path) -> None:
    records = PidRecords(tmp_path)
    ours, orphan, reused = _child(), _child(), _child()
    try:
        records.add("i-ours", ours.pid)  # its server (this process) is alive
        started = start_time(orphan.pid)
        (tmp_path / "i-orphan.pid").write_text(f"{orphan.pid} {started} {os.getpid()} 1\n")
        # a record of a process that has since gone, its id now someone else's
        (tmp_path / "i-reused.pid").write_text(f"{reused.pid} 1 {os.getpid()} 1\n")
        (tmp_path / "i-torn.pid").write_text("12")
        assert records.stop_orphans() == [orphan.pid]
        assert _gone(orphan)
        assert ours.poll() is None and reused.poll() is None
        assert sorted(p.name for p in tmp_path.iterdir()) == ["i-ours.pid"]
        records.remove("i-ours")
        assert list(tmp_path.iterdir()) == []
    finally:
        for proc in (ours, orphan, reused):
            proc.kill()
            proc.wait(10)
