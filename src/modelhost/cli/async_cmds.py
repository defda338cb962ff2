"""Asynchronous inference from the command line: ``invoke-async`` (upload the input, queue the
request, optionally wait for its result) and ``queue`` (an endpoint's backlog)."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.table import Table

from modelhost.asyncinf.objects import ObjectIOError, exists, read_input
from modelhost.cli._aws import DataOpt, Server, UrlOpt, console, err, fail, reporting, settings
from modelhost.cli.objects import server_json, server_store

INPUT_PREFIX = "async-inputs"
POLL_S = 0.25
MAX_RESULT_BYTES = 1024**3


def invoke_async(
    name: Annotated[str, typer.Argument(help="Endpoint name.")],
    file: Annotated[Path, typer.Argument(help="The input: a file, uploaded first.")],
    content_type: Annotated[str, typer.Option(help="Content-Type.")] = "application/json",
    accept: Annotated[str | None, typer.Option(help="Accept.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the result and print it (or save it).")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="With --wait: save the result here.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="With --wait: give up after this long (s).")] = 900,
    url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Queue one request for asynchronous endpoint NAME with FILE as its input.

    Prints the InferenceId and where the result will be; with --wait, shows progress until
    the output (or failure) object exists, then prints the output to stdout (or saves it)."""
    s = settings(data_dir)
    server = Server.from_options(url, s)
    if not file.is_file():
        fail(f"{file} is not a file.")
    target = server_store(server, data_dir)
    store = target.store
    key = f"{INPUT_PREFIX}/{uuid.uuid4().hex}/{file.name}"
    with reporting(server):
        with target.writing():
            store.ensure_bucket(s.default_bucket)
            store.upload_file(file, s.default_bucket, key)
        request: dict[str, Any] = {
            "EndpointName": name,
            "InputLocation": f"s3://{s.default_bucket}/{key}",
            "ContentType": content_type,
        }
        if accept:
            request["Accept"] = accept
        resp = server.runtime().invoke_endpoint_async(**request)
    out_loc, fail_loc = resp["OutputLocation"], resp.get("FailureLocation", "")
    err.print(
        f"queued {escape(resp['InferenceId'])}\n  output:  {escape(out_loc)}\n"
        f"  failure: {escape(fail_loc)}",
        highlight=False,
    )
    if not wait:
        return
    started = time.monotonic()
    deadline = started + timeout
    with err.status("waiting for the result") as status:
        while time.monotonic() < deadline:
            if exists(store, out_loc):
                break
            if fail_loc and exists(store, fail_loc):
                fail(f"The request failed: {_failure_text(_read(store, fail_loc))}")
            status.update(f"waiting for the result: {time.monotonic() - started:.0f} s")
            time.sleep(POLL_S)
        else:
            fail(f"No result after {timeout:g} s; it will be at {out_loc}.")
    data = _read(store, out_loc)
    if output is not None:
        output.write_bytes(data)
        err.print(f"saved {len(data)} bytes to {escape(str(output))}", highlight=False)
        return
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _failure_text(document: bytes) -> str:
    """A failure object's message (its JSON ``Message``, else the text as it is)."""
    try:
        return str(json.loads(document)["Message"])
    except (ValueError, KeyError, TypeError):
        return document.decode(errors="replace")


def _read(store: Any, location: str) -> bytes:
    try:
        return read_input(store, location, MAX_RESULT_BYTES)
    except ObjectIOError as exc:
        fail(str(exc))


def queue(
    name: Annotated[str, typer.Argument(help="Endpoint name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    url: UrlOpt = None,
) -> None:
    """Show the backlog of asynchronous endpoint NAME: its requests not yet ended, oldest
    first."""
    server = Server.from_options(url)
    summary = server_json(server, f"/modelhost/endpoints/{quote(name, safe='')}/queue")
    rows: list[dict[str, Any]] = summary.get("requests", [])
    size, oldest = summary.get("backlog", 0), summary.get("oldest_age_s", 0.0)
    if as_json:
        console.print_json(json.dumps(summary))
        return
    console.print(f"{escape(name)}: {size} requests not yet ended; oldest {oldest:g} s old")
    if rows:
        table = Table()
        for title in ("InferenceId", "Status", "Attempts", "Age (s)", "Input"):
            table.add_column(title, no_wrap=title != "Input", overflow="fold")
        for r in rows:
            table.add_row(
                escape(str(r["inference_id"])),
                str(r["status"]),
                str(r["attempts"]),
                f"{r['age_s']:g}",
                escape(str(r["input"])),
            )
        console.print(table)
