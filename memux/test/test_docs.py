"""
The documentation in doc/ builds with Sphinx with no warning, and its API
reference describes every public name of memux.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import subprocess
import sys
import zlib
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import memux
from memux.test._helpers import ROOT, isCheckout

#: The documentation's sources, in the checkout.
DOC = ROOT / "doc"

#: Public packages of memux that the API reference only mentions: commands
#: and tests, not APIs.
NOT_APIS = frozenset({"memux.bench", "memux.test"})

#: The one build, shared by the tests of a process: (exit status, output,
#: output directory).
_built: list[tuple[int, str, Path]] = []


def publicModules() -> list[str]:
    """
    The modules whose names are memux's API: ``memux`` and each of its
    modules and packages with no leading underscore, but `NOT_APIS`.
    """
    found = ["memux"]
    for info in pkgutil.iter_modules(memux.__path__, "memux."):
        name = info.name.rpartition(".")[2]
        if not name.startswith("_") and info.name not in NOT_APIS:
            found.append(info.name)
    return sorted(found)


def buildDocs(output: Path) -> tuple[int, str, Path]:
    """
    Build doc/ as HTML into ``output`` (once per process) with warnings as
    errors; skip the calling test if Sphinx or doc/ is missing.
    """
    if importlib.util.find_spec("sphinx") is None:
        raise SkipTest("Sphinx is not installed: pip install '.[docs]'")
    if not isCheckout():
        raise SkipTest(f"{DOC} is not here (memux installed, not a checkout)")
    if not _built:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sphinx",
                "-W",
                "--keep-going",
                "-q",
                "-b",
                "html",
                "-d",
                str(output / "doctrees"),
                str(DOC),
                str(output / "html"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        _built.append((done.returncode, done.stdout + done.stderr, output / "html"))
    return _built[0]


def inventoryNames(path: Path) -> set[str]:
    """The names of the Python objects in Sphinx inventory ``path`` (v2)."""
    *header, compressed = path.read_bytes().split(b"\n", 4)
    if header[0] != b"# Sphinx inventory version 2":
        raise AssertionError(f"{path} is not a version 2 inventory")
    names = set()
    for line in zlib.decompress(compressed).decode().splitlines():
        match = re.match(r"(.+?)\s+(\S+)\s+(-?\d+)\s+?(\S*)\s+(.*)", line)
        if match and match.group(2).startswith("py:"):
            names.add(match.group(1))
    return names


class DocumentationTests(SynchronousTestCase):
    """
    ``python -m sphinx -W --keep-going -b html doc OUT`` succeeds, and the
    API reference leaves no public name out.
    """

    def build(self) -> tuple[int, str, Path]:
        """The build of this process (see `buildDocs`)."""
        return buildDocs(Path(self.mktemp()))

    def test_buildsWithoutWarnings(self) -> None:
        """
        Sphinx builds the HTML documentation, API reference included, with
        warnings as errors: every page is in the table of contents, every
        docstring is valid reST, and every cross reference resolves.
        """
        status, output, html = self.build()
        self.assertEqual(status, 0, f"sphinx-build failed:\n{output}")
        for page in ["index", "guide", "spec", "api/index", "api/memux"]:
            self.assertTrue((html / f"{page}.html").exists(), page)

    def test_publicModules(self) -> None:
        """
        The public modules are those the API reference is written for: a
        new module with no leading underscore needs a page in doc/api/.
        """
        if not isCheckout():
            raise SkipTest(f"{DOC} is not here (memux installed, not a checkout)")
        pages = {path.stem for path in (DOC / "api").glob("*.rst")} - {"index"}
        expected = {name.removeprefix("memux.") for name in publicModules()}
        self.assertEqual(pages, expected)

    def test_everyPublicNameDocumented(self) -> None:
        """
        The built API reference (its ``objects.inv``) describes each public
        module, each name in ``memux.__all__`` (as ``memux.NAME``) and each
        name in each public module's ``__all__``, so a public name without
        a docstring, or a new public module without a page, fails here.
        """
        status, output, html = self.build()
        self.assertEqual(status, 0, f"sphinx-build failed:\n{output}")
        documented = inventoryNames(html / "objects.inv")
        missing = []
        for moduleName in publicModules():
            module = importlib.import_module(moduleName)
            if moduleName not in documented:
                missing.append(moduleName)
            exported = getattr(module, "__all__", None)
            if exported is None:
                missing.append(f"{moduleName}.__all__ (say what is public)")
                continue
            missing += [
                f"{moduleName}.{name}"
                for name in exported
                if f"{moduleName}.{name}" not in documented
            ]
        self.assertEqual(missing, [], "not in the API reference")
