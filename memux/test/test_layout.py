# -*- test-case-name: memux.test.test_layout -*-
"""
How memux is put together: its tools import only public names, and its
tests never import each other (what they share lives in helper modules that
hold no tests).
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

#: memux's tests, and the package they are imported as.
HERE = Path(__file__).resolve().parent
PACKAGE = "memux.test"


def importedNames(tree: ast.AST, package: str) -> set[str]:
    """
    The dotted names a module of C{package} imports anywhere in C{tree}
    (at the top or inside a function): each module imported, and for
    C{from M import N}, both C{M} and C{M.N}, since C{N} may be a module.
    Relative imports are resolved against C{package}.
    """
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def crossImports(directory: Path, package: str) -> list[tuple[str, str]]:
    """
    Each (test module file, test module it imports) in C{directory}, the
    directory of C{package}, where both are C{test_*.py} modules and not
    the same one.
    """
    testModules = {f"{package}.{p.stem}" for p in directory.glob("test_*.py")}
    found = []
    for path in sorted(directory.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        own = f"{package}.{path.stem}"
        for name in sorted(importedNames(tree, package) & (testModules - {own})):
            found.append((path.name, name))
    return found


def testMethodsOutsideTestModules(directory: Path) -> list[tuple[str, str]]:
    """
    Each (file, C{Class.method}) in C{directory} where a module not named
    C{test_*.py} defines a class with a method trial would run as a test
    (one whose name starts with C{test}).
    """
    found = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("test_"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                found += [
                    (path.name, f"{node.name}.{item.name}")
                    for item in node.body
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                    and item.name.startswith("test")
                ]
    return found


class TestModuleImportTests(SynchronousTestCase):
    """
    No C{memux/test/test_*.py} module imports another: what tests share is
    in C{memux.test._helpers} and C{memux.test._fakes}.  Importing a test
    module drags its test cases into the importer's namespace, where trial
    finds (and runs) them a second time, and ties unrelated tests
    together.
    """

    def test_noTestModuleImportsAnother(self) -> None:
        """
        No C{test_*.py} module in C{memux/test} imports another one, in any
        form (C{import memux.test.test_x}, C{from memux.test import
        test_x}, C{from memux.test.test_x import y}, relative imports, or
        any of these inside a function).
        """
        self.assertGreater(len(list(HERE.glob("test_*.py"))), 1)
        self.assertEqual(crossImports(HERE, PACKAGE), [])

    def test_crossImportsFound(self) -> None:
        """
        L{crossImports} finds a test module importing another in every
        form, and passes over imports of helper modules and a module's
        mention of itself.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "test_b.py").write_text("from pkg.test import _helpers\n")
        (directory / "test_self.py").write_text("import pkg.test.test_self\n")
        forms = [
            "import pkg.test.test_b\n",
            "from pkg.test import test_b\n",
            "from pkg.test.test_b import thing\n",
            "from . import test_b\n",
            "from .test_b import thing\n",
            "def later():\n    from pkg.test.test_b import thing\n",
        ]
        for i, source in enumerate(forms):
            (directory / f"test_a{i}.py").write_text(source)
        self.assertEqual(
            crossImports(directory, "pkg.test"),
            [(f"test_a{i}.py", "pkg.test.test_b") for i in range(len(forms))],
        )


class HelperModuleTests(SynchronousTestCase):
    """
    The modules of C{memux/test} that test modules import (C{_helpers},
    C{_fakes}, ...) define no test methods, so a base test case imported
    from one adds no tests to the module importing it.
    """

    def test_noTestMethods(self) -> None:
        """
        No class in a module of C{memux/test} not named C{test_*.py} has a
        method whose name starts with C{test}.
        """
        self.assertEqual(testMethodsOutsideTestModules(HERE), [])

    def test_testMethodsFound(self) -> None:
        """
        L{testMethodsOutsideTestModules} finds a test method in a helper
        module's class, and passes over test modules and other methods.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "_base.py").write_text(
            "class Base:\n    def setUp(self): pass\n    def test_x(self): pass\n"
        )
        (directory / "test_mine.py").write_text(
            "class Mine:\n    def test_y(self): pass\n"
        )
        self.assertEqual(
            testMethodsOutsideTestModules(directory), [("_base.py", "Base.test_x")]
        )


#: The library's root, and the tools: modules built on memux's public names
#: (doc/architecture.rst, "The layers").
LIBRARY = HERE.parent
TOOLS = [
    *(
        LIBRARY / f"{name}.py"
        for name in (
            "tap",
            "endpoints",
            "tunnel",
            "testing",
            "tls",
            "mptcp",
            "services",
            "memory",
            "metrics",
            "status",
            "__main__",
        )
    ),
    *sorted((LIBRARY / "_cli").glob("*.py")),
    *sorted((LIBRARY.parent / "twisted" / "plugins").glob("memux*.py")),
]


#: The tools' own private modules, which they may share among themselves.
TOOL_PRIVATE = ("memux._cli", "memux._tapoptions", "memux._destinations")


def privateImports(path: Path) -> list[str]:
    """
    What the module at C{path} imports that is private to another part of
    memux: a private module of the core (C{memux._engine}, C{memux._wire},
    ...), or a C{_name} from a public memux module.  (The tools' own
    private modules, L{TOOL_PRIVATE}, may be shared among tools.)
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom) and not node.level:
            modules = [node.module or ""]
            names = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            if not module.startswith("memux") or module.startswith(TOOL_PRIVATE):
                continue
            if any(part.startswith("_") for part in module.split(".")[1:]):
                found.append(module)
                continue
            found += [
                f"{module}.{name}"
                for name in names
                if name.startswith("_") and not name.startswith("__")
            ]
    return found


class LibraryLayerTests(SynchronousTestCase):
    """
    The library's tools (the twistd plugin and its service, the command,
    endpoints, tunnels, TLS, the testing fake) are built on public names
    only: nothing private of the core (C{memux._engine}, C{memux._wire},
    ...) nor a private name of a public module.
    """

    def test_toolsImportPublicNames(self) -> None:
        """
        No tool module imports a private memux module or private name.
        """
        self.assertGreater(len(TOOLS), 10)
        for path in TOOLS:
            self.assertTrue(path.exists(), path)
        found = {str(p.relative_to(LIBRARY.parent)): privateImports(p) for p in TOOLS}
        self.assertEqual({k: v for k, v in found.items() if v}, {})

    def test_privateImportsFound(self) -> None:
        """
        The check sees a private module of the core and a private name of
        a public module, and lets public names, dunders like
        C{__version__}, and the tools' own private modules pass.
        """
        path = Path(self.mktemp())
        path.write_text(
            "import memux._engine\n"
            "from memux.protocol import MemuxProtocol, _helper\n"
            "from memux import __version__\n"
            "from memux._cli._common import _clock\n"
            "from memux._tapoptions import Options, _describeError\n"
            "def f():\n    from memux._wire import Frame\n",
            encoding="utf-8",
        )
        self.assertEqual(
            sorted(privateImports(path)),
            ["memux._engine", "memux._wire", "memux.protocol._helper"],
        )


#: The asyncio front end: it runs the same core without Twisted.
ASYNCIO_FRONT_END = LIBRARY / "aio"


def moduleFile(name: str, root: Path = LIBRARY.parent) -> Path | None:
    """
    The source file of module C{name} under C{root} (a package's
    C{__init__.py}), or None if there is none there.
    """
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def foreignImports(
    paths: list[Path], banned: tuple[str, ...], root: Path = LIBRARY.parent
) -> dict[str, list[str]]:
    """
    For each module reached from C{paths} by following imports of modules
    found under C{root} (at any depth, in functions too, but not under
    C{if TYPE_CHECKING:}, which never runs), the imports of C{banned}
    packages it makes; only modules that make some.
    """
    found: dict[str, list[str]] = {}
    seen: set[Path] = set()
    todo = list(paths)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in list(ast.walk(tree)):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        package = ".".join(path.relative_to(root).with_suffix("").parts)
        if path.name != "__init__.py":
            package = package.rpartition(".")[0]
        else:
            package = package.removesuffix(".__init__")
        for name in importedNames(tree, package):
            if name.split(".")[0] in banned:
                found.setdefault(str(path.relative_to(root)), []).append(name)
                continue
            parts = name.split(".")
            # The module and each package above it (their __init__ runs).
            for i in range(1, len(parts) + 1):
                module = moduleFile(".".join(parts[:i]), root)
                if module is not None:
                    todo.append(module)
    return {k: sorted(set(v)) for k, v in found.items()}


class AsyncioLayerTests(SynchronousTestCase):
    """
    The asyncio front end (C{memux.aio}) is a front end like the Twisted
    one (it may use the sans-IO core's private modules), but imports no
    Twisted (nor zope), directly or through the memux modules it imports.
    (C{test_aio} also checks this at run time, in a fresh interpreter.)
    """

    def test_noTwisted(self) -> None:
        """
        No module reached from C{memux/aio} imports C{twisted} or C{zope}.
        """
        paths = sorted(ASYNCIO_FRONT_END.glob("*.py"))
        self.assertGreater(len(paths), 1)
        self.assertEqual(foreignImports(paths, ("twisted", "zope")), {})

    def test_foreignImportsFound(self) -> None:
        """
        L{foreignImports} follows imports (in functions too) from module to
        module and package to package, and names the module that imports
        a banned package and what it imports; imports for type checkers
        only do not count.
        """
        root = Path(self.mktemp())
        (root / "pkg" / "sub").mkdir(parents=True)
        (root / "pkg" / "__init__.py").write_text("")
        (root / "pkg" / "sub" / "__init__.py").write_text("import zope.interface\n")
        (root / "pkg" / "a.py").write_text(
            "from typing import TYPE_CHECKING\nfrom pkg import b\n"
            "if TYPE_CHECKING:\n    import twisted.python\n"
        )
        (root / "pkg" / "b.py").write_text(
            "def f():\n    from pkg.sub import c\n    import twisted.internet\n"
        )
        (root / "pkg" / "sub" / "c.py").write_text("import os\n")
        self.assertEqual(
            foreignImports([root / "pkg" / "a.py"], ("twisted", "zope"), root),
            {
                "pkg/b.py": ["twisted.internet"],
                "pkg/sub/__init__.py": ["zope.interface"],
            },
        )


class PackagingTests(SynchronousTestCase):
    """
    What an install (``pip install .``) puts in place.
    """

    def test_everyPackageListed(self) -> None:
        """
        Every package of memux's (a directory with an ``__init__.py``) is
        listed in setup.cfg's ``packages``: an install leaves out any that
        is not (memux.aio once was), and the tests, which run from the
        checkout, would never notice.
        """
        from configparser import ConfigParser

        root = HERE.parent.parent
        config = ConfigParser()
        if not config.read(root / "setup.cfg"):
            raise SkipTest("not run from a checkout (no setup.cfg)")
        listed = set(config["options"]["packages"].split())
        found = {
            ".".join(init.parent.relative_to(root).parts)
            for init in (root / "memux").rglob("__init__.py")
        }
        self.assertEqual(found - listed, set())
