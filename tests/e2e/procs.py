"""Find the instance processes a server started (by their working directory under its data
directory), to kill one or to prove none is left."""

from __future__ import annotations

import os
from pathlib import Path


def instance_pids(data_dir: Path) -> list[int]:
    root = str(data_dir.resolve())
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if b"modelhost.runtime" in cmdline and cwd.startswith(root):
            pids.append(int(entry))
    return sorted(pids)
