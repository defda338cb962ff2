"""``modelhost models ENDPOINT --loaded``: the models each instance of a multi-model endpoint
holds, their size and last use (the server's ``/modelhost/endpoints/<name>/models``)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from modelhost.cli._aws import Server, console, err, fail


def fetch(server: Server, endpoint: str) -> list[dict[str, Any]]:
    url = f"{server.url}/modelhost/endpoints/{urllib.parse.quote(endpoint, safe='')}/models"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        fail(f"Cannot read the loaded models of {endpoint} from {server.url}: {exc}")
    instances: list[dict[str, Any]] = doc.get("Instances", [])
    return instances


def show(server: Server, endpoint: str, as_json: bool) -> None:
    instances = fetch(server, endpoint)
    if as_json:
        typer.echo(json.dumps(instances, indent=2))
        return
    if not instances:
        err.print(f"No instance of {escape(endpoint)} holds a model (or it is not multi-model).")
        return
    table = Table()
    for title in ("Instance", "Target model", "Size", "Last used", "In flight", "Status"):
        table.add_column(title, overflow="fold")
    now = time.time()
    for inst in instances:
        used = f"{_mb(inst['MemoryUsedBytes'])} of {_mb(inst['MemoryBudgetBytes'])}"
        table.add_row(escape(inst["InstanceId"]), f"({used})", "", "", "", "")
        for m in inst["Models"]:
            table.add_row(
                "",
                escape(m["TargetModel"]),
                _mb(m["Bytes"]),
                f"{now - m['LastUsed']:.0f} s ago",
                str(m["InFlight"]),
                m["Status"],
            )
    console.print(table)


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"
