"""Find the instance processes a server started (by their working directory under its data
directory), to kill one or to prove none is left."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ASK_ROUNDS = 200  # invocations instance_env may send to hear from every instance


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


def instance_env(
    rt: Any, endpoint: str, names: list[str], instances: int = 1
) -> dict[int, dict[str, str | None]]:
    """The environment variables ``names`` as each of ``instances`` instance processes of
    ``endpoint`` (serving the ``environ`` fixture) sees them, by process id. Asked through the
    model, not /proc/<pid>/environ: an instance forked from the zygote has its own environment
    in its memory, while /proc shows the zygote's (the one it was started with)."""
    found: dict[int, dict[str, str | None]] = {}
    for _ in range(ASK_ROUNDS):
        out = rt.invoke_endpoint(
            EndpointName=endpoint, Body=json.dumps(names), ContentType="application/json"
        )
        answer = json.loads(out["Body"].read())
        found[answer["pid"]] = answer["env"]
        if len(found) == instances:
            return found
    raise AssertionError(f"only {len(found)} of {instances} instances answered")


def wait_zygote(log: Path, timeout: float = 120.0) -> None:
    """Until the server's log says its zygote is ready: instances started after this are
    forked from it (backends/zygote.py)."""
    deadline = time.monotonic() + timeout
    while b"the zygote is ready" not in log.read_bytes():
        assert time.monotonic() < deadline, "the zygote did not get ready"
        time.sleep(0.05)
