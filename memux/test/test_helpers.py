# -*- test-case-name: memux.test.test_helpers -*-
"""
Tests for L{memux.test._helpers}, which other tests lean on.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from memux.test._helpers import ROOT, isCheckout


class IsCheckoutTests(SynchronousTestCase):
    """
    L{isCheckout} tells a checkout from an installed package, so tests that
    need the checkout skip (rather than fail) when the suite runs against
    an installed memux from another directory.
    """

    def _tree(self, *files: str) -> Path:
        root = Path(self.mktemp())
        for name in files:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
        return root

    def test_installed(self) -> None:
        """
        site-packages holding memux and Twisted's C{twisted/plugins/} (with
        its C{__init__.py} and memux's plugin module) is not a checkout.
        """
        root = self._tree(
            "memux/__init__.py",
            "twisted/plugins/__init__.py",
            "twisted/plugins/memux_endpoints.py",
        )
        self.assertFalse(isCheckout(root))

    def test_checkout(self) -> None:
        """
        A directory with the project's C{setup.cfg} beside the package is a
        checkout.
        """
        root = self._tree(
            "setup.cfg", "memux/__init__.py", "twisted/plugins/memux_endpoints.py"
        )
        self.assertTrue(isCheckout(root))

    def test_thisRun(self) -> None:
        """
        L{ROOT} is the directory holding the memux package under test.
        """
        import memux

        self.assertEqual(Path(memux.__file__).resolve().parents[1], ROOT)
