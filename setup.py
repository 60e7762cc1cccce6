"""
memux's build: the metadata is in setup.cfg; this file adds the optional
compiled core.

Where it can, the build compiles the typed sans-IO core (`COMPILED`) with
mypyc into C extension modules that run the same code with less Python
overhead (doc/performance.rst, "The compiled core").  Where it cannot (not
CPython, no working C compiler or Python headers, or ``MEMUX_PURE_PYTHON=1``
in the environment) it installs the pure-Python modules alone, exactly as
before: ``pip install .`` works either way.  mypy (mypyc's home) is asked
for as a build requirement only when the build will compile, so a machine
without a compiler does not fetch it.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
import tempfile

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: The modules compiled.  They import no Twisted, and nothing outside them
#: subclasses their classes (a compiled class cannot be subclassed from
#: Python) except `memux._channel.ChannelCore`, which says so to mypyc
#: (``allow_interpreted_subclasses``): each front end's channel object
#: subclasses it.  No compiled class may subclass ``collections.deque``
#: (or ``defaultdict``): mypyc makes such a class crash when instantiated
#: (likely mypyc issue 1186: it is allocated the size of a smaller base),
#: which is why `memux._scheduler`'s schedulers hold their deque.  Keep in
#: step with ``memux._variant.COMPILABLE``.
COMPILED = [
    "memux/_wire.py",
    "memux/_credit.py",
    "memux/_scheduler.py",
    "memux/_engine.py",
    "memux/_session.py",
    "memux/_channel.py",
]

#: mypyc's home, asked for only when compiling (tried with mypy 2.4; one
#: whose mypycify lacks ``group_name`` fails into the pure-Python install).
MYPY = "mypy >= 1.15"


def say(message: str) -> None:
    print(f"memux: {message}", file=sys.stderr)


def pureRequested() -> bool:
    """
    Whether ``MEMUX_PURE_PYTHON`` asks for the pure-Python modules only.
    """
    return os.environ.get("MEMUX_PURE_PYTHON", "") not in ("", "0")


def canCompile() -> bool:
    """
    Whether this machine builds a C extension for this Python: a compiler
    that compiles a file including ``Python.h``.
    """
    if platform.python_implementation() != "CPython":
        return False
    try:
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.sysconfig import customize_compiler, get_python_inc
    except ImportError:
        return False
    with tempfile.TemporaryDirectory() as where:
        source = os.path.join(where, "probe.c")
        with open(source, "w") as f:
            f.write("#include <Python.h>\nint probe(void) { return 0; }\n")
        try:
            compiler = new_compiler()
            customize_compiler(compiler)
            # Silence the probe: a failure here is an answer, not an error.
            with open(os.devnull, "w") as null:
                saved = os.dup(2)
                os.dup2(null.fileno(), 2)
                try:
                    compiler.compile(
                        [source], output_dir=where, include_dirs=[get_python_inc()]
                    )
                finally:
                    os.dup2(saved, 2)
                    os.close(saved)
        except Exception:
            return False
    return True


def willCompile() -> bool:
    """
    Whether this build compiles the core (see the module docstring).
    """
    if pureRequested():
        say("MEMUX_PURE_PYTHON is set: installing the pure-Python modules only")
        return False
    if not canCompile():
        say("no C compiler for this Python: installing the pure-Python modules only")
        return False
    return True


def extensions() -> list:  # type: ignore[type-arg]
    """
    mypyc's extensions for `COMPILED`, when building them (none if mypyc
    is missing or fails).
    """
    try:
        from mypyc.build import mypycify
    except ImportError:
        say("mypyc is not installed: installing the pure-Python modules only")
        return []
    try:
        return mypycify(
            # Not the project's mypy settings: they load the mypy-zope
            # plugin, which these modules do not need and the build lacks.
            ["--config-file=", "--follow-imports=silent", *COMPILED],
            opt_level="3",
            # The shared part as memux._core__mypyc, inside the package,
            # rather than a top-level module named by a hash.
            group_name="memux._core",
        )
    except (Exception, SystemExit) as e:  # mypy exits on a type error
        say(f"mypyc failed ({e!r}): installing the pure-Python modules only")
        return []


class OptionalBuildExt(build_ext):
    """
    Build the extensions if the machine can; if one fails, install none
    (they need each other) and leave the pure-Python modules alone.
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler after all, a compile error
            say(f"the compiled core failed to build ({e}): pure-Python modules only")
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []


# Metadata commands (egg_info, dist_info, sdist) need no compiler and should
# not pay for mypyc's code generation; PEP 517's "what does the build need"
# step runs egg_info, and learns of mypy from setup_requires.  Editable
# installs (pip install -e, develop) stay pure: an extension built beside
# its source would hide every later edit of that source.
commands = sys.argv[1:]
editable = any(c.startswith(("develop", "editable")) for c in commands)
building = not editable and any(
    c.startswith(("build", "bdist", "install")) for c in commands
)
compiling = not editable and (building or "egg_info" in commands) and willCompile()
if building and not compiling:
    # setuptools never prunes build/: a pure build after a compiled one
    # would otherwise pack the old extensions into its wheel.
    for suffix in ("so", "pyd"):
        for stale in glob.glob(os.path.join("build", "lib*", "memux", "*." + suffix)):
            os.remove(stale)
setup(
    setup_requires=[MYPY] if compiling else [],
    ext_modules=extensions() if compiling and building else [],
    cmdclass={"build_ext": OptionalBuildExt},
)
