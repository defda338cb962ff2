"""``modelhost keys create|list|revoke``: the server's access keys (auth/keys.py).

``create`` prints exactly two shell lines, ``AWS_ACCESS_KEY_ID=...`` and
``AWS_SECRET_ACCESS_KEY=...``, so ``eval "$(modelhost keys create NAME --policy admin)"`` (or
``export``) works; the secret is shown this once. A running server sees every change within a
fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from modelhost.auth.keys import KeyFileError, add_key, keys_path, read_keys, revoke_key
from modelhost.auth.policy import KINDS, Policy
from modelhost.cli._aws import console, fail, settings

keys_app = typer.Typer(no_args_is_help=True, help="Access keys: create, list, revoke.")

KeyDataOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="The server's data directory (env MODELHOST_DATA_DIR)."),
]


def _path(data_dir: Path | None) -> Path:
    s = settings(data_dir)
    return keys_path(s.data_dir, s.keys_file)


@keys_app.command()
def create(
    name: Annotated[str, typer.Argument(help="A name for the key (who or what uses it).")],
    policy: Annotated[str, typer.Option(help=f"What it may do: {' | '.join(KINDS)}.")],
    endpoints: Annotated[
        list[str] | None,
        typer.Option(
            "--endpoints", help="invoke only: endpoint name patterns (fnmatch, e.g. 'prod-*')."
        ),
    ] = None,
    data_dir: KeyDataOpt = None,
) -> None:
    """Create a key; print it as AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines."""
    try:
        rule = Policy.parse(policy, tuple(endpoints or ()))
        key = add_key(_path(data_dir), name, rule)
    except (ValueError, KeyFileError) as exc:
        fail(str(exc))
    print(f"AWS_ACCESS_KEY_ID={key.access_key_id}")
    print(f"AWS_SECRET_ACCESS_KEY={key.secret}")


@keys_app.command("list")
def list_keys(data_dir: KeyDataOpt = None) -> None:
    """The keys: name, access key id, policy, creation time (never the secrets)."""
    path = _path(data_dir)
    try:
        keys = read_keys(path)
    except KeyFileError as exc:
        fail(str(exc))
    if not keys:
        console.print(f"No keys in {path}: a loopback server accepts any request.")
        return
    table = Table("NAME", "ACCESS KEY ID", "POLICY", "CREATED")
    for key in keys:
        table.add_row(key.name, key.access_key_id, key.policy.describe(), key.created)
    console.print(table)


@keys_app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name (or access key id).")],
    data_dir: KeyDataOpt = None,
) -> None:
    """Delete a key; a running server refuses it at once."""
    try:
        key = revoke_key(_path(data_dir), name)
    except KeyFileError as exc:
        fail(str(exc))
    console.print(f"Revoked {key.name} ({key.access_key_id}).")
