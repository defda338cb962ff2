"""``modelhost logs``: every instance's log file for an endpoint, optionally followed."""

from __future__ import annotations

import time
from pathlib import Path

import typer

FOLLOW_POLL_S = 0.25


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime) if root.is_dir() else []


def show_logs(
    root: Path,
    endpoint: str,
    follow: bool,
    max_seconds: float | None = None,
    pattern: str = "**/*.log",  # <variant>/<instance-id>[/<container>].log
) -> None:
    """Print (and with ``follow``, keep printing) the lines of the files ``pattern`` finds
    under ``root``, each behind its stream's name (its path under ``root``)."""
    if not root.is_dir():
        typer.echo(f"No logs for endpoint {endpoint} (looked in {root}).", err=True)
        raise typer.Exit(1)
    offsets: dict[Path, int] = {}
    started = time.monotonic()
    while True:
        for path in _files(root, pattern):
            _print_new(path, root, offsets)
        if not follow or (max_seconds is not None and time.monotonic() - started > max_seconds):
            return
        time.sleep(FOLLOW_POLL_S)


def _print_new(path: Path, root: Path, offsets: dict[Path, int]) -> None:
    stream = path.relative_to(root).with_suffix("").as_posix()  # <variant>/<instance-id>
    with path.open("rb") as f:
        f.seek(offsets.get(path, 0))
        data = f.read()
        offsets[path] = f.tell()
    for line in data.decode(errors="replace").splitlines():
        typer.echo(f"{stream} | {line}")
