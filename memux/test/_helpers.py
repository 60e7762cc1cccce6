# -*- test-case-name: memux.test.test_helpers -*-
"""
Helpers shared by memux's test modules (one home, so test modules never
import each other).
"""

from __future__ import annotations

import unittest
from pathlib import Path

#: The directory above the memux package: the checkout's root when the
#: tests run from a checkout, site-packages when memux is installed.
ROOT = Path(__file__).resolve().parents[2]


def isCheckout(root: Path = ROOT) -> bool:
    """
    Whether ``root`` is a memux checkout (rather than the site-packages
    directory of an installed memux).  An installed package has
    ``twisted/plugins/`` beside it too (Twisted's own, holding memux's
    plugin), so only the project's own files tell a checkout.
    """
    return (root / "setup.cfg").is_file() and (root / "memux").is_dir()


#: The protocol's specification, in the checkout.
SPEC = ROOT / "doc" / "spec.rst"


def readSpec() -> str:
    """
    Return the text of ``doc/spec.rst``, or skip the calling test when the
    document is not there (for example in an installed package).
    """
    if not SPEC.is_file():
        raise unittest.SkipTest(f"{SPEC} not found: the specification is not installed")
    return SPEC.read_text(encoding="utf-8")
