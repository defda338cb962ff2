"""Throwaway virtual environments for the servers modelhost is compared with.

Each environment lives under the cache directory (default /tmp/modelhost-bench-venvs) and is
reused while its marker file lists exactly the pinned requirements; otherwise it is rebuilt.
They are benchmark-only: nothing in modelhost imports these packages.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

DEFAULT_CACHE = Path("/tmp/modelhost-bench-venvs")
MARKER = "modelhost-bench-requirements.json"

# The model is pickled by modelhost's venv and loaded by each server: the same scikit-learn,
# joblib and numpy everywhere. uvloop < 0.22: MLServer 1.7.1's worker crashes under 0.23.
# uvloop and httptools are not pulled in by `pip install mlserver` / `pip install bentoml`; they
# are added so both run on their fastest event loop and HTTP parser (a conservative comparison).
COMMON = [
    "scikit-learn==1.9.1",
    "joblib==1.6.0",
    "numpy==2.4.6",
    "uvloop==0.21.0",
    "httptools==0.9.0",
]
ENVS: dict[str, list[str]] = {
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", *COMMON],
    "bentoml": ["bentoml==1.4.40", *COMMON],
}
# What to print per environment (distribution names).
REPORTED: dict[str, list[str]] = {
    "mlserver": ["mlserver", "mlserver-sklearn", "fastapi", "uvicorn", "uvloop", "httptools"],
    "bentoml": ["bentoml", "starlette", "uvicorn", "uvloop", "httptools"],
}
SHARED_REPORTED = ["scikit-learn", "numpy", "joblib"]


def python(cache: Path, name: str) -> Path:
    return cache / name / "bin" / "python"


def ensure(cache: Path, name: str) -> Path:
    """Create (or reuse) environment `name`; return its python."""
    root = cache / name
    marker = root / MARKER
    wanted = ENVS[name]
    try:
        if json.loads(marker.read_text()) == wanted and python(cache, name).exists():
            return python(cache, name)
    except (OSError, ValueError):
        pass
    print(f"building the {name} venv in {root} (pip, a few minutes) ...", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    pip = [str(python(cache, name)), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    out = subprocess.run([*pip, *wanted], capture_output=True, text=True)
    if out.returncode != 0:
        noise = "is ignored: it is neither a file nor a directory"
        lines = [x for x in (out.stdout + out.stderr).splitlines() if noise not in x]
        raise RuntimeError(f"pip install into {root} failed:\n" + "\n".join(lines[-40:]))
    marker.write_text(json.dumps(wanted))
    return python(cache, name)


def versions(py: Path | str, names: list[str]) -> dict[str, str]:
    """Installed versions of `names` as seen by interpreter `py`."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try:\n"
        "        out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError:\n"
        "        out[n] = '-'\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run([str(py), "-c", code, *names], capture_output=True, text=True, check=True)
    result: dict[str, str] = json.loads(out.stdout)
    return result
