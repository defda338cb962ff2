"""Lazy framework imports with an error that says which pip package to install.

`MODELHOST_BLOCK_IMPORTS=onnxruntime,torch` (read by the runtime's `__main__`) makes those
top-level modules unimportable in the model server, as if they were not installed: tests use it
to check the missing-framework error without uninstalling anything.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType

BLOCK_ENV = "MODELHOST_BLOCK_IMPORTS"


class FrameworkNotInstalled(ImportError):
    """The framework a model needs cannot be imported; the message names the pip package."""


def missing_message(module: str, package: str) -> str:
    return (
        f"This model needs {module}, which is not installed in the model server's environment: "
        f"pip install {package} (or list it in code/requirements.txt)"
    )


def require(module: str, package: str) -> ModuleType:
    """`import module`, or FrameworkNotInstalled naming `package` when it is not there."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.partition(".")[0]
        if exc.name is not None and exc.name.partition(".")[0] != top:
            # the framework is there but one of its own dependencies is not
            raise FrameworkNotInstalled(
                f"importing {module} failed: {exc}; pip install {exc.name.partition('.')[0]} "
                "(or list it in code/requirements.txt)"
            ) from exc
        raise FrameworkNotInstalled(missing_message(module, package)) from exc
    except ImportError as exc:
        raise FrameworkNotInstalled(
            f"importing {module} failed: {exc} (the installed {package} may be broken or built "
            "for another platform)"
        ) from exc


def loaded(module: str) -> ModuleType | None:
    """The module when something already imported it (never imports it)."""
    return sys.modules.get(module)


class _Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def block_imports(spec: str | None) -> frozenset[str]:
    """Make the comma-separated top-level modules in `spec` unimportable; returns them."""
    names = frozenset(n.strip() for n in (spec or "").split(",") if n.strip())
    if names:
        sys.meta_path.insert(0, _Blocker(names))
    return names
