"""`code/requirements.txt`: pip-installed once into a shared, content-addressed directory.

The directory is `<envs_dir>/<sha256 of the file>-<python tag>` (`MODELHOST_ENVS_DIR`, default
`<tmp>/modelhost-envs`), shared by every instance and endpoint on the machine whose
requirements.txt has the same content. pip runs with the model server's own interpreter as
`pip install --target <tmp dir> -r requirements.txt` in the code dir (so relative paths and
`--find-links ./wheels` / `--no-index` lines work as pip allows); the finished directory is
renamed into place, so a directory that exists is complete. Concurrent instances serialise on
an `fcntl.flock` of `<dir>.lock`: the first installs, the others wait and reuse its result.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import logging
import os
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from modelhost.artifacts.files import tree_digest

log = logging.getLogger("modelhost.runtime.requirements")

ENVS_ENV = "MODELHOST_ENVS_DIR"
TIMEOUT_ENV = "MODELHOST_PIP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0
PYTHON_TAG = f"py{sys.version_info.major}{sys.version_info.minor}"


class RequirementsError(Exception):
    """pip failed; the message quotes pip's own error line."""


def envs_dir(env: Mapping[str, str]) -> Path:
    configured = env.get(ENVS_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "modelhost-envs"


def env_key(content: bytes, local_digest: str = "") -> str:
    """The cache directory's name: the requirements' digest per Python version, and, when the
    file names local paths or options (``./wheels/x.whl``, ``-f ./wheels``), the digest of
    the code dir too, since the same text then means different packages in different dirs."""
    digest = hashlib.sha256(content)
    digest.update(local_digest.encode())
    return f"{digest.hexdigest()}-{PYTHON_TAG}"


def names_local_files(content: bytes) -> bool:
    for raw in content.splitlines():
        line = raw.strip()
        if (
            line
            and not line.startswith(b"#")
            and (line.startswith((b".", b"/", b"-", b"~")) or b"file:" in line or b" @ ." in line)
        ):
            return True
    return False


def pip_error(output: str) -> str:
    """The line of pip's output worth quoting: its last `ERROR:` line, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "pip printed nothing"


def pip_command(python: str, target: Path, requirements: Path) -> list[str]:
    return [
        python,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--no-warn-script-location",
        "--target",
        str(target),
        "-r",
        str(requirements),
    ]


def ensure_requirements(
    code_dir: Path,
    envs: Path,
    *,
    label: str = "code/requirements.txt",
    python: str = sys.executable,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path | None:
    """Install `code_dir/requirements.txt` once; the directory to put on sys.path, or None."""
    requirements = code_dir / "requirements.txt"
    if not requirements.is_file():
        return None
    content = requirements.read_bytes()
    if not any(
        line.strip() and not line.lstrip().startswith(b"#") for line in content.splitlines()
    ):
        return None
    envs.mkdir(parents=True, exist_ok=True)
    local = tree_digest(code_dir) if names_local_files(content) else ""
    final = envs / env_key(content, local)
    if final.is_dir():
        return final
    with _locked(envs / f"{final.name}.lock"):
        if final.is_dir():  # another instance installed it while we waited
            log.info("reusing %s installed by another instance", final)
            return final
        _install(requirements, code_dir, final, label, python, timeout_s)
    return final


class _locked:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another instance installing requirements (%s)", self.path)
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _install(
    requirements: Path, code_dir: Path, final: Path, label: str, python: str, timeout_s: float
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        log.info("installing %s into %s", label, final)
        output = _run_pip(pip_command(python, tmp, requirements), code_dir, label, timeout_s)
        sys.stderr.write(output)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _run_pip(argv: Sequence[str], cwd: Path, label: str, timeout_s: float) -> str:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RequirementsError(
            f"pip install -r {label} failed: still running after {timeout_s:.0f} s"
        ) from None
    if done.returncode != 0:
        sys.stderr.write(done.stdout)
        raise RequirementsError(f"pip install -r {label} failed: {pip_error(done.stdout)}")
    return done.stdout


def activate(directory: Path) -> None:
    """Put an installed requirements directory first on sys.path (and in PYTHONPATH for
    subprocesses the user code starts)."""
    entry = str(directory)
    site.addsitedir(entry)  # also runs the .pth files packages install
    sys.path.remove(entry)
    sys.path.insert(0, entry)
    importlib.invalidate_caches()
    current = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = entry if not current else f"{entry}{os.pathsep}{current}"
