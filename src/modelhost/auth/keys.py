"""Access keys: the keys file (``<data-dir>/keys.json``, or ``MODELHOST_KEYS_FILE``) and the
server's view of it.

- The file is JSON, mode 0600 (the server's user only: SigV4 verification needs each secret
  itself, so it cannot be stored hashed). Every change writes a new file beside it and renames
  it into place, under an flock of ``<file>.lock``, so a reader never sees half a file and two
  ``modelhost keys`` commands never lose each other's change.
- ``KeyRing`` is what the server reads: a dict by access key id, refreshed when the file's
  (inode, mtime, size) changes, looked at with one ``os.stat`` at most every ``check_s``. A
  revocation reaches a running server within that time, with no disk I/O per request.
- Secrets are never logged: ``AccessKey.__repr__`` leaves the secret out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import string
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from modelhost.auth.policy import Policy

log = logging.getLogger(__name__)

FILE_NAME = "keys.json"
CHECK_S = 0.1  # how often a running server looks at the keys file (one stat)
_ID_ALPHABET = string.ascii_uppercase + "234567"
_ID_PREFIX = "MHK"  # modelhost key (AWS's are AKIA...)


class KeyFileError(RuntimeError):
    """The keys file cannot be read or changed; the message says why."""


@dataclass(frozen=True)
class AccessKey:
    name: str
    access_key_id: str
    secret: str = field(repr=False)
    policy: Policy
    created: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret,
            "policy": self.policy.kind,
            "endpoints": list(self.policy.endpoints),
            "created": self.created,
        }

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> AccessKey:
        endpoints = raw.get("endpoints") or []
        if not isinstance(endpoints, list):
            raise ValueError("endpoints must be a list")
        policy = Policy.parse(str(raw["policy"]), tuple(str(e) for e in endpoints))
        return cls(
            name=str(raw["name"]),
            access_key_id=str(raw["access_key_id"]),
            secret=str(raw["secret_access_key"]),
            policy=policy,
            created=str(raw.get("created", "")),
        )


def keys_path(data_dir: Path, keys_file: Path | None = None) -> Path:
    return keys_file if keys_file is not None else data_dir / FILE_NAME


def new_key(name: str, policy: Policy) -> AccessKey:
    key_id = _ID_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))
    secret = secrets.token_urlsafe(30)  # 40 characters, as AWS's
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return AccessKey(name, key_id, secret, policy, created)


def read_keys(path: Path) -> list[AccessKey]:
    """The keys in ``path`` (none when it does not exist)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KeyFileError(f"cannot read the keys file {path}: {exc.strerror}") from exc
    try:
        raw = json.loads(text) if text.strip() else {"keys": []}
        return [AccessKey.from_json(entry) for entry in raw["keys"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"the keys file {path} is not valid: {exc}") from exc


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, keys: list[AccessKey]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps({"keys": [k.to_json() for k in keys]}, indent=2).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def add_key(path: Path, name: str, policy: Policy) -> AccessKey:
    """Create a key named ``name`` (refused when one exists) and store it."""
    with _locked(path):
        keys = read_keys(path)
        if any(k.name == name for k in keys):
            raise KeyFileError(f"a key named {name} exists; revoke it first or choose another name")
        key = new_key(name, policy)
        _write(path, [*keys, key])
        return key


def revoke_key(path: Path, name: str) -> AccessKey:
    """Remove the key named ``name`` (or whose access key id is ``name``)."""
    with _locked(path):
        keys = read_keys(path)
        gone = [k for k in keys if name in (k.name, k.access_key_id)]
        if not gone:
            raise KeyFileError(f"no key named {name} in {path}")
        _write(path, [k for k in keys if k not in gone])
        return gone[0]


class KeyRing:
    """The server's keys, by access key id, kept in step with the keys file."""

    def __init__(self, path: Path, check_s: float = CHECK_S) -> None:
        self.path = path
        self.check_s = check_s
        self.keys: dict[str, AccessKey] = {}
        self.broken = False  # a keys file that cannot be read refuses everyone
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()  # the S3 relay's thread reads it too
        self.refresh(force=True)

    def lookup(self, access_key_id: str) -> AccessKey | None:
        self.refresh()
        return self.keys.get(access_key_id)

    def any(self) -> bool:
        self.refresh()
        return bool(self.keys) or self.broken

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        with self._lock:
            self._next_check = now + self.check_s
            try:
                st = os.stat(self.path)
                stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                stamp = None
            if stamp == self._stamp and not force:
                return
            try:
                keys = read_keys(self.path)
            except KeyFileError as exc:
                # a broken file refuses everyone rather than opening the server
                log.error("%s; every request is refused until it is fixed", exc)
                self.keys, self.broken, self._stamp = {}, True, stamp
                return
            self.broken = False
            self.keys = {k.access_key_id: k for k in keys}
            if stamp != self._stamp and self._stamp is not None:
                log.info("keys file changed: %d key(s)", len(self.keys))
            self._stamp = stamp
