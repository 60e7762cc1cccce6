"""
Which variant of the sans-IO core runs: the modules mypyc compiled when
memux was installed (see setup.py), or their pure-Python sources.

``MEMUX_PURE_PYTHON=1`` in the environment makes every compiled module
load from its ``.py`` source instead, for comparison, debugging, or to run
the tests against both variants of one installation.  It must be set
before memux is imported (`preferSources` runs in ``memux/__init__.py``).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["COMPILABLE", "isCompiled", "preferSources", "pureRequested"]

#: The modules a build may compile (setup.py's ``COMPILED``).
COMPILABLE = (
    "memux._wire",
    "memux._credit",
    "memux._scheduler",
    "memux._engine",
    "memux._session",
    "memux._channel",
)


def pureRequested() -> bool:
    """
    Whether ``MEMUX_PURE_PYTHON`` asks for the pure-Python modules.
    """
    return os.environ.get("MEMUX_PURE_PYTHON", "") not in ("", "0")


class _SourcesFirst:
    """
    A meta path finder that loads the named modules from their ``.py``
    files, ahead of the extension modules the import system prefers.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names or not path:
            return None
        leaf = fullname.rpartition(".")[2] + ".py"
        for entry in path:
            source = os.path.join(entry, leaf)
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None  # no source: the ordinary finders decide


def preferSources(names: Sequence[str] = COMPILABLE) -> None:
    """
    Load ``names`` from their ``.py`` sources from now on (once).
    """
    if not any(isinstance(f, _SourcesFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourcesFirst(names))


def isCompiled(module: ModuleType) -> bool:
    """
    Whether ``module`` was loaded from a compiled extension.
    """
    return isinstance(
        getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader
    )
