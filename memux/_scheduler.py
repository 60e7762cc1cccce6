# -*- test-case-name: memux.test.test_engine -*-
"""
Outbound scheduling: which channel sends its next chunk.  The engine
decides *whether* a channel may send (credit, its queue); a `Scheduler`
decides the order among those that may.  The Keykos notes: "There may be
policy here if there is competition for output bandwidth."
"""

from __future__ import annotations

from collections import deque
from typing import Protocol, TypeVar

__all__ = ["RoundRobinScheduler", "Schedulable", "Scheduler"]


class Schedulable(Protocol):
    """
    What a scheduler needs of a channel.
    """

    #: the channel id
    id: int
    #: whether it is in line (kept by the scheduler, read by the engine to
    #: skip a call when it already is)
    scheduled: bool
    #: whether it waits for session credit (kept by the scheduler, read by
    #: the engine to skip `Scheduler.remove` for the many that do not)
    parked: bool


C = TypeVar("C", bound=Schedulable)


class Scheduler(Protocol[C]):
    """
    The ready queue of a session's outbound channels, and its policy.  A
    channel is in line (`add`) when it has something it may send; the
    engine takes the next (`next`), lets it send a chunk, and puts it back
    (`yieldTurn`) if it has more.  A channel out of session credit waits
    apart (`park`) until the peer grants more (`unpark`).
    """

    def add(self, ch: C) -> None:
        """
        Put ``ch``, which has something to send, in line (if not already).
        """

    def next(self) -> C | None:
        """
        Take the channel whose turn it is (None if none is in line).
        """

    def yieldTurn(self, ch: C) -> None:
        """
        ``ch`` had its turn and has more: back in line.
        """

    def park(self, ch: C) -> None:
        """
        ``ch`` waits for session credit.
        """

    def unpark(self) -> None:
        """
        Session credit arrived: every parked channel back in line.
        """

    def remove(self, ch: C) -> None:
        """
        ``ch`` is gone: forget it (if it is still in line, `next` may
        return it; the engine skips channels it no longer knows).
        """

    def __len__(self) -> int:
        """
        How many channels are in line (the engine asks whether any are, for
        every chunk it sends: keep it cheap).
        """

    @property
    def parked(self) -> bool:
        """
        Whether any channel waits for session credit.
        """


class RoundRobinScheduler(deque[C]):
    """
    Fair round robin by chunk: each channel in line sends one chunk in
    turn, so a long message on one channel never holds up the others.
    Parked channels come back in the order they were parked.

    The scheduler is its ready queue (a deque), so that the engine's "is
    any other channel in line?", asked for every chunk, is answered in C
    rather than by a Python call (small messages: 2 calls fewer each).
    """

    __slots__ = ("_parked",)

    def __init__(self) -> None:
        super().__init__()
        self._parked: dict[int, C] = {}

    def add(self, ch: C) -> None:
        """
        Put ``ch``, which has something to send, in line (if not already).
        """
        if not ch.scheduled:
            ch.scheduled = True
            self.append(ch)

    def next(self) -> C | None:
        """
        Take the channel whose turn it is (None if none is in line).
        """
        if not self:
            return None
        ch = self.popleft()
        ch.scheduled = False
        return ch

    def yieldTurn(self, ch: C) -> None:
        """
        ``ch`` had its turn and has more: back in line.
        """
        ch.scheduled = True
        self.append(ch)

    def park(self, ch: C) -> None:
        ch.parked = True
        self._parked[ch.id] = ch

    def unpark(self) -> None:
        parked, self._parked = self._parked, {}
        for ch in parked.values():
            ch.parked = False
            self.add(ch)

    def remove(self, ch: C) -> None:
        """
        ``ch`` is gone: forget it (if it is still in line, `next` may
        return it; the engine skips channels it no longer knows).
        """
        ch.parked = False
        self._parked.pop(ch.id, None)

    @property
    def parked(self) -> bool:
        """
        Whether any channel waits for session credit.
        """
        return bool(self._parked)
