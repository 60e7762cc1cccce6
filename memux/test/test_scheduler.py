# -*- test-case-name: memux.test.test_scheduler -*-
"""
Tests for L{memux._scheduler}.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.trial.unittest import SynchronousTestCase

from memux._scheduler import RoundRobinScheduler


@dataclass(eq=False)
class Item:
    """
    A stand-in channel.
    """

    id: int
    scheduled: bool = False
    parked: bool = False
    urgency: int = 3
    weight: int = 16
    offset: int = 0
    turnEnd: int = 0


class RoundRobinTests(SynchronousTestCase):
    """
    L{RoundRobinScheduler}: each channel in line sends in turn.
    """

    def test_order(self) -> None:
        """
        Channels come out in the order they were added, once each however
        often they are added, and a turn yielded goes to the back.
        """
        s: RoundRobinScheduler[Item] = RoundRobinScheduler()
        a, b, c = Item(1), Item(3), Item(5)
        for ch in (a, b, a, c):
            s.add(ch)
        first = s.next()
        assert first is not None
        s.yieldTurn(first)
        self.assertEqual([s.next(), s.next(), s.next(), s.next()], [b, c, a, None])
        self.assertFalse(s)

    def test_park(self) -> None:
        """
        Parked channels are out of line until unparked, then back in the
        order they were parked; a removed one does not come back.
        """
        s: RoundRobinScheduler[Item] = RoundRobinScheduler()
        a, b, c = Item(1), Item(3), Item(5)
        for ch in (b, a, c):
            s.park(ch)
        self.assertTrue(s.parked)
        self.assertIsNone(s.next())
        s.remove(c)
        s.unpark()
        self.assertFalse(s.parked)
        self.assertEqual([s.next(), s.next(), s.next()], [b, a, None])
        self.assertFalse(a.scheduled or b.scheduled)
