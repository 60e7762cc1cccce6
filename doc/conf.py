"""
Sphinx configuration for memux's documentation.

Build it with ``python -m sphinx doc build/html`` from the root of the
checkout (``pip install '.[docs]'`` first); ``memux.test.test_docs`` builds
it with warnings as errors.  Nothing is fetched from the network: names of
Twisted, zope.interface and the standard library are not linked (see
``nitpick_ignore_regex``), because intersphinx would have to download their
inventories.
"""

import os
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
# The reference is built from the sources: modules compiled by mypyc (see
# performance.rst) keep no docstrings, nor the ``#:`` comments autodoc reads.
os.environ["MEMUX_PURE_PYTHON"] = "1"
# Document the checkout this file is in, whatever else is installed; the
# API reference's directive is in _ext/.
sys.path[:0] = [str(here.parent), str(here / "_ext")]

import memux  # noqa: E402

project = "memux"
author = "the memux developers"
copyright = "the memux developers"
release = version = memux.__version__

extensions = ["sphinx.ext.autodoc", "memuxapi"]
exclude_patterns = ["_build"]
# `name` is a cross reference to a Python object, as in the docstrings.
default_role = "py:obj"
# Every reference must resolve, except those to the libraries memux builds
# on, which have no inventory here (no intersphinx: no network).
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(twisted|zope|prometheus_client)(\..*)?"),
    ("py:.*", r"(collections\.abc|ipaddress|os|socket)\..*"),
    # The standard library's asyncio and ssl, and builtin exceptions.
    ("py:.*", r"(asyncio|ssl)(\..*)?"),
    ("py:.*", r"\w+Error"),
    # memux's private modules and names are not documented.
    ("py:.*", r"memux(\.\w+)*\._\w+(\..*)?"),
    ("py:.*", r"_\w+"),
    # What memux.tls takes as trust roots: a type alias not in its __all__.
    ("py:class", r"TrustSource"),
    # Twisted's, named in the docstrings of a module that does not import them.
    ("py:obj", r"ConnectionDone|ConnectionLost"),
]
autodoc_member_order = "bysource"
autodoc_class_signature = "separated"

html_theme = "alabaster"
html_title = f"memux {release}"
