"""Reading inputs and writing results for asynchronous inference, on the platform's object
store (``s3://``) or, as modelhost's extension, local files (``file:///abs`` or ``/abs``).

Writes never expose a partial object: the object store's writes are atomic, and a local file
is written without a name (Linux ``O_TMPFILE``), then linked into its place; or, where that
cannot be done, written beside its place (a dot-name of its own, created exclusively) and
renamed into it.
Local paths stay strings (os calls, no pathlib): these run once per request on the busy path.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import threading

from modelhost.storage import ObjectStore, StorageError, parse_s3_url


class ObjectIOError(Exception):
    """An input could not be read or a result could not be written; ``str()`` says why."""


_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TEMP_NAMES = itertools.count()  # with the pid: a writer's temp names do not collide


def _local(url: str) -> str | None:
    if url.startswith("file://"):
        return url.removeprefix("file://")
    if url.startswith("/"):
        return url
    return None


def is_local(url: str) -> bool:
    """Whether ``url`` names a local file (``file:///abs`` or ``/abs``)."""
    return _local(url) is not None


def _s3(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise ObjectIOError(f"unsupported location {url}: use s3://bucket/key or a local path")
    try:
        bucket, key = parse_s3_url(url)
    except ValueError as exc:
        raise ObjectIOError(str(exc)) from exc
    if not key:
        raise ObjectIOError(f"{url} names a bucket, not an object")
    return bucket, key


def read_input(store: ObjectStore, url: str, limit: int) -> bytes:
    """The whole input object, at most ``limit`` bytes."""
    path = _local(url)
    try:
        if path is not None:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        else:
            bucket, key = _s3(url)
            with store.open_read(bucket, key) as f:
                data = f.read(limit + 1)
    except FileNotFoundError:
        raise ObjectIOError(f"The input {url} does not exist.") from None
    except (OSError, StorageError) as exc:
        raise ObjectIOError(f"The input {url} could not be read: {exc}") from None
    if len(data) > limit:
        raise ObjectIOError(f"The input {url} is larger than the limit of {limit} bytes.")
    return data


def read_small_local(url: str, limit: int) -> bytes | None:
    """The whole of ``url`` when it is a local file of at most ``limit`` bytes, else None (to
    be read by ``read_input``, which says why it cannot be)."""
    path = _local(url)
    if path is None:
        return None
    try:  # os calls, no file object: this runs once per request on the busy path
        fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            return None
        parts: list[bytes] = []
        got = 0
        for _ in range(1 << 20):  # bounded: one read, unless the file is written meanwhile
            part = os.read(fd, limit + 1 - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
            if got > limit:
                return None
            if got == size:  # all that fstat saw: no second read to find the end
                break
    except OSError:
        return None
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 1 else b"".join(parts)  # (b"" for an empty file)


def exists(store: ObjectStore, url: str) -> bool:
    path = _local(url)
    try:
        if path is not None:
            return os.path.isfile(path)
        bucket, key = _s3(url)
        return store.head(bucket, key) is not None
    except (OSError, StorageError, ObjectIOError):
        return False


def write_object(store: ObjectStore, url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` whole: the object is absent until it is complete."""
    path = _local(url)
    try:
        if path is None:
            bucket, key = _s3(url)
            store.put_bytes(bucket, key, data)
            return
        _write_local(path, data)
    except (OSError, StorageError) as exc:
        raise ObjectIOError(f"{url} could not be written: {exc}") from None


def _write_local(path: str, data: bytes) -> None:
    if _write_unnamed(path, data):
        return
    folder, name = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC
    for _ in range(100):  # bounded: a name taken (O_EXCL) or a folder made, then again
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{next(_TEMP_NAMES)}")
        try:
            fd = os.open(tmp, flags, 0o600)
            break
        except FileExistsError:
            continue
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
    else:
        raise OSError(f"no temporary name free beside {path}")
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_unnamed(path: str, data: bytes) -> bool:
    """Linux: write ``data`` to a file with no name yet (``O_TMPFILE``), then give it its name
    (``linkat``): one directory operation instead of a create and a rename. False, with nothing
    written, where that cannot be done (another file system, no /proc, or ``path`` exists:
    a link does not replace it); the caller then writes a named temporary file."""
    proc = _proc_fd_dir()
    if proc is None:
        return False
    folder = os.path.dirname(path) or "."
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | _CLOEXEC, 0o600)
    except OSError:  # a missing folder included: the named route makes it
        return False
    try:
        _write_all(fd, data)
        os.link(str(fd), path, src_dir_fd=proc, follow_symlinks=True)
    except (FileExistsError, NotImplementedError):
        return False
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.ENOENT, errno.EPERM, errno.EOPNOTSUPP):
            return False
        raise
    finally:
        os.close(fd)
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    for _ in range(1 << 30):  # bounded: each write takes at least a byte
        if not view:
            break
        view = view[os.write(fd, view) :]


_PROC_FD: int | None = None  # an open /proc/self/fd (-1: none to be had); None: not tried yet
_PROC_LOCK = threading.Lock()


def _proc_fd_dir() -> int | None:
    """This process's ``/proc/self/fd``, opened once (again after a fork:
    ``_forget_proc_fd``; no ``getpid`` system call per write); None without ``O_TMPFILE``
    or /proc."""
    global _PROC_FD
    found = _PROC_FD
    if found is not None:
        return found if found >= 0 else None
    with _PROC_LOCK:
        if _PROC_FD is not None:  # another thread opened it meanwhile
            return _PROC_FD if _PROC_FD >= 0 else None
        fd = -1
        if hasattr(os, "O_TMPFILE"):
            with contextlib.suppress(OSError):
                fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        _PROC_FD = fd
    return fd if fd >= 0 else None


def _forget_proc_fd() -> None:
    """In a forked child: the inherited descriptor is the parent's /proc/<pid>/fd."""
    global _PROC_FD
    found, _PROC_FD = _PROC_FD, None
    if found is not None and found >= 0:
        with contextlib.suppress(OSError):
            os.close(found)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_proc_fd)
