"""Safe tar extraction, tree copies and content digests.

Every archive member is checked here before anything is written: only regular files and
directories with plain relative paths are accepted. tarfile's own extraction (and its filters)
is never used; each file is streamed out by hand against a :class:`Budget`.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from modelhost.artifacts.errors import ArtifactError, Budget

_CHUNK = 1024 * 1024
_INVALID = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)
# tarfile reads a GNU long-name or pax extended header whole into memory (twice over): a few MB
# of gzip can declare gigabytes. Real ones hold a path and a few attributes.
MAX_EXTENDED_HEADER = 1024 * 1024
_EXTENDED = frozenset(
    {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
     tarfile.SOLARIS_XHDTYPE}
)  # fmt: skip


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses an extended header too big to be real before tarfile reads it."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED and self.size > MAX_EXTENDED_HEADER:
            raise tarfile.HeaderError(
                f"an extended header of {self.size} bytes (more than {MAX_EXTENDED_HEADER})"
            )
        member: tarfile.TarInfo = super()._proc_member(tarfile_)  # type: ignore[misc]
        return member


def extract_archive(archive: Path, dest: Path, url: str, budget: Budget) -> None:
    """Extract the tar (optionally gzip/bz2/xz compressed) ``archive`` into the new ``dest``."""
    with archive.open("rb") as src:
        extract_stream(src, dest, url, budget)


def extract_stream(src: IO[bytes], dest: Path, url: str, budget: Budget) -> None:
    """``extract_archive`` reading the archive from ``src`` as it comes (no copy on disk)."""
    dest.mkdir()
    try:
        with tarfile.open(fileobj=src, mode="r|*", tarinfo=_BoundedTarInfo) as tar:
            for member in tar:
                _extract_member(tar, member, dest, url, budget)
    except _INVALID as exc:
        raise _invalid(url, exc) from exc
    except OSError as exc:
        if exc.errno is None:  # gzip.BadGzipFile, bz2 stream errors: the archive, not the disk
            raise _invalid(url, exc) from exc
        raise ArtifactError(f"Failed to extract model data archive {url}: {exc}") from exc


def _invalid(url: str, exc: BaseException) -> ArtifactError:
    reason = str(exc) or type(exc).__name__
    return ArtifactError(f"Model data archive {url} is not a valid tar.gz archive: {reason}")


def _extract_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, url: str, budget: Budget
) -> None:
    budget.add_member()
    rel = member_path(member.name, url)
    _check_type(member, url)
    if rel is None:  # "." / "./": the archive's root directory
        return
    target = dest.joinpath(*rel.parts)
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    budget.add_bytes(member.size)
    src = tar.extractfile(member)
    if src is None:  # pragma: no cover - isreg() members always have a file object
        raise ArtifactError(f"Cannot read archive member '{member.name}' ({url})")
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_file(src, target, executable=bool(member.mode & 0o111))


def member_path(name: str, url: str) -> PurePosixPath | None:
    """The safe relative path for an archive member or object key, or None for the root."""
    if name.startswith(("/", "\\")) or (name[:1].isalpha() and name[1:2] == ":"):
        raise refused(name, url, "absolute paths are not allowed")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts or any("\\" in part or "\0" in part for part in parts):
        raise refused(name, url, "path escapes the model directory")
    return PurePosixPath(*parts) if parts else None


def refused(name: str, url: str, reason: str) -> ArtifactError:
    return ArtifactError(f"Refused unsafe archive member '{name}': {reason} (model data {url})")


def _check_type(member: tarfile.TarInfo, url: str) -> None:
    if member.isreg() or member.isdir():
        return
    if member.issym():
        reason = f"symbolic links are not allowed (-> '{member.linkname}')"
    elif member.islnk():
        reason = f"hard links are not allowed (-> '{member.linkname}')"
    elif member.ischr() or member.isblk():
        reason = "device files are not allowed"
    elif member.isfifo():
        reason = "FIFOs are not allowed"
    else:
        reason = f"unsupported member type {member.type!r}"
    raise refused(member.name, url, reason)


def _write_file(src: IO[bytes], target: Path, *, executable: bool) -> None:
    with target.open("wb") as out:
        shutil.copyfileobj(src, out, _CHUNK)
    target.chmod(0o755 if executable else 0o644)


# --- local directories -------------------------------------------------------------------


def copy_tree(src: Path, dest: Path, budget: Budget) -> None:
    """Copy the directory ``src`` into the existing ``dest``, following symlinks."""
    for dirpath, dirnames, filenames in os.walk(src, onerror=_raise, followlinks=True):
        dirnames.sort()
        rel = Path(dirpath).relative_to(src)
        for name in dirnames:
            budget.add_member()
            (dest / rel / name).mkdir()
        for name in sorted(filenames):
            budget.add_member()
            _copy_file(Path(dirpath, name), dest / rel / name, budget)


def _raise(exc: OSError) -> None:
    raise exc


def tree_size(root: Path) -> int:
    """Bytes in the regular files under ``root`` (symlinks not followed)."""
    total = 0
    for dirpath, _, filenames in os.walk(root, onerror=_raise):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def working_copy(src: Path, dest: Path, max_bytes: int) -> bool:
    """Copy the model directory ``src`` to the new directory ``dest`` for one instance, when
    it holds at most ``max_bytes`` (and ``dest`` is not inside it); whether it was copied. A
    failed copy leaves no ``dest``."""
    if dest.resolve().is_relative_to(src.resolve()) or tree_size(src) > max_bytes:
        return False
    try:
        shutil.copytree(src, dest, symlinks=True)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return True


def copy_file(src: Path, dest: Path, budget: Budget) -> None:
    budget.add_member()
    _copy_file(src, dest, budget)


def _copy_file(src: Path, dest: Path, budget: Budget) -> None:
    st = src.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(
            f"Model data {budget.url} contains '{src}', which is not a regular file"
        )
    budget.add_bytes(st.st_size)
    with src.open("rb") as fh:
        _write_file(fh, dest, executable=bool(st.st_mode & 0o111))


# --- digests -----------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digest(root: Path) -> str:
    """A sha256 over every path, executable bit and file content under ``root``."""
    digest = hashlib.sha256(b"modelhost-tree-v1\n")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        for name in dirnames:
            digest.update(f"d {(rel / name).as_posix()}\n".encode())
        for name in sorted(filenames):
            path = Path(dirpath, name)
            mode = "x" if path.stat().st_mode & 0o111 else "-"
            line = f"f {(rel / name).as_posix()} {mode} {file_digest(path)}\n"
            digest.update(line.encode())
    return digest.hexdigest()
