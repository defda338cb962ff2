"""Where client commands upload objects (``deploy``'s model.tar.gz, ``invoke-async``'s input):
the S3 server the server names at ``GET /modelhost/info``, with the caller's credentials.

A server with the plain local directory store (``MODELHOST_EMBEDDED_S3=false``, no S3 server)
has no network way in: its objects directory (``--data-dir``'s, else the one the server
reports) is written directly, which works on the server's machine only.
"""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelhost.cli._aws import AUTH_CODES, AUTH_HINT, Server, caller_credentials, fail
from modelhost.storage import ObjectStore, StorageError, object_store

INFO_PATH = "/modelhost/info"


def server_info(server: Server) -> dict[str, Any]:
    """The server's ``/modelhost/info``."""
    return server_json(server, INFO_PATH)


def server_json(server: Server, path: str) -> dict[str, Any]:
    """One of modelhost's own JSON pages; one clear line and exit 1 when it cannot be had."""
    try:
        data = json.loads(server.get(path))
    except urllib.error.HTTPError as exc:
        hint = AUTH_HINT if exc.code == 403 else ""
        fail(f"The server at {server.url} answered {path} with HTTP {exc.code}{hint}.")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(
            f"No modelhost server answers at {server.url} ({reason}). Start one with "
            "`modelhost serve` or point --url at it."
        )
    except ValueError:
        fail(f"The server at {server.url} answered {path} with something not JSON.")
    if not isinstance(data, dict):
        fail(f"The server at {server.url} answered {path} with something unexpected.")
    return data


@dataclass
class ServerStore:
    """The server's object store as this client reaches it."""

    store: ObjectStore
    where: str  # "the S3 server URL" or "the local directory store DIR"
    local: bool  # the local directory store, written directly

    @contextmanager
    def writing(self) -> Iterator[None]:
        """One clear line and exit 1 when a write fails, saying where it went."""
        try:
            yield
        except StorageError as exc:
            if self.local:
                fail(
                    f"Writing to {self.where} failed ({exc}): the server has no S3 server, so "
                    "this client writes the server's data directory itself, which works on the "
                    "server's machine only (--data-dir names the directory)."
                )
            hint = AUTH_HINT if exc.code in AUTH_CODES | {"AccessDenied", "403"} else ""
            fail(f"Uploading to {self.where} failed: {exc}{hint}")


def server_store(server: Server, data_dir: Path | None) -> ServerStore:
    """The server's object store as this client reaches it."""
    info = server_info(server)
    s3 = info.get("S3EndpointUrl")
    if isinstance(s3, str) and s3:
        creds = caller_credentials()
        store = object_store(Path(), s3, server.region, (creds.access_key, creds.secret_key))
        return ServerStore(store, f"the S3 server {s3}", local=False)
    reported = info.get("LocalObjectsDir")
    objects = data_dir / "objects" if data_dir is not None else Path(str(reported))
    if (data_dir is None and not reported) or not objects.parent.is_dir():
        fail(
            f"The server at {server.url} has no S3 server (MODELHOST_EMBEDDED_S3=false), only "
            f"the local directory store {reported}, which this machine cannot see"
            f"{'' if data_dir is None else f' (nor {objects})'}: run this command on the "
            "server's machine (with --data-dir DIR, the server's data directory), or serve "
            "with the embedded S3 server or MODELHOST_S3_ENDPOINT_URL."
        )
    store = object_store(objects, None, server.region)
    return ServerStore(store, f"the local directory store {objects}", local=True)
