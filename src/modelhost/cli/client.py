"""Client commands (deploy, invoke, endpoints, models): boto3 against a running server."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Added by the CLI client work; nothing here yet."""
