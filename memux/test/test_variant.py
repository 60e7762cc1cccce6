# -*- test-case-name: memux.test.test_variant -*-
"""
Tests for L{memux._variant}: which variant of the core runs (compiled by
mypyc, or pure Python), and C{MEMUX_PURE_PYTHON}, which forces the pure one.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import memux
from memux import _variant

#: the checkout (or installation) this memux was imported from
ROOT = Path(memux.__file__).resolve().parent.parent

PROBE = (
    "import importlib, memux\n"
    "from memux._variant import COMPILABLE\n"
    "print(memux.compiled, *(importlib.import_module(m).__file__.endswith('.py')"
    " for m in COMPILABLE))\n"
)


def probe(pure: str | None) -> list[str]:
    """
    In a fresh interpreter, with C{MEMUX_PURE_PYTHON} set to C{pure} (or
    unset), C{memux.compiled} and whether each compilable module came from
    its C{.py} source.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MEMUX_PURE_PYTHON", None)
    if pure is not None:
        env["MEMUX_PURE_PYTHON"] = pure
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise AssertionError(done.stderr)
    return done.stdout.split()


class VariantTests(SynchronousTestCase):
    """
    C{memux.compiled} says which variant runs, for all the compilable
    modules at once, and C{MEMUX_PURE_PYTHON=1} makes it the pure one.
    """

    def test_compiledMatchesModules(self) -> None:
        """
        C{memux.compiled} is True exactly when every module a build may
        compile was loaded compiled: the variants are never mixed.
        """
        modules = [importlib.import_module(name) for name in _variant.COMPILABLE]
        self.assertEqual(
            [_variant.isCompiled(m) for m in modules],
            [memux.compiled] * len(modules),
        )

    def test_pureForced(self) -> None:
        """
        With C{MEMUX_PURE_PYTHON=1}, every compilable module is loaded from
        its source and C{memux.compiled} is False, whatever was installed.
        """
        self.assertEqual(probe("1"), ["False"] + ["True"] * len(_variant.COMPILABLE))

    def test_defaultVariant(self) -> None:
        """
        Without C{MEMUX_PURE_PYTHON} (or with it set to C{0}), the modules
        load as installed: all compiled when C{memux.compiled} says so in
        that interpreter, all from source otherwise.
        """
        for value in (None, "0", ""):
            compiled, *sources = probe(value)
            self.assertIn(compiled, ("True", "False"))
            self.assertEqual(
                sources, [str(compiled == "False")] * len(_variant.COMPILABLE)
            )
            if not _variant.pureRequested():  # then this process loaded the same
                self.assertEqual(compiled, str(memux.compiled))

    def test_pureRequested(self) -> None:
        """
        C{MEMUX_PURE_PYTHON} asks for the pure modules when set to anything
        but C{""} or C{"0"}.
        """
        for value, expected in [("1", True), ("yes", True), ("0", False), ("", False)]:
            self.patch(os, "environ", {"MEMUX_PURE_PYTHON": value})
            self.assertEqual(_variant.pureRequested(), expected, value)
        self.patch(os, "environ", {})
        self.assertFalse(_variant.pureRequested())


class SourcesFirstTests(SynchronousTestCase):
    """
    The finder behind C{MEMUX_PURE_PYTHON} loads only the modules it names,
    and only from a C{.py} file.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        (self.directory / "mod.py").write_text("VALUE = 1\n")
        self.finder = _variant._SourcesFirst(["pkg.mod", "pkg.missing"])

    def test_namedModuleFromSource(self) -> None:
        """
        A named module is found as its C{.py} file in the package's path.
        """
        spec = self.finder.find_spec("pkg.mod", [str(self.directory)])
        assert spec is not None
        self.assertEqual(spec.name, "pkg.mod")
        self.assertEqual(spec.origin, str(self.directory / "mod.py"))

    def test_otherModulesLeftAlone(self) -> None:
        """
        A module not named, a top-level lookup (no path) and a named module
        with no source are left to the ordinary finders.
        """
        self.assertIsNone(self.finder.find_spec("pkg.other", [str(self.directory)]))
        self.assertIsNone(self.finder.find_spec("pkg.mod", None))
        self.assertIsNone(self.finder.find_spec("pkg.missing", [str(self.directory)]))
