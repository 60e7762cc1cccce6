# -*- test-case-name: memux.test.test_priority,memux.test.test_scheduler -*-
"""
Outbound scheduling: which channel sends its next chunk.  The engine
decides *whether* a channel may send (credit, its queue); a `Scheduler`
decides the order among those that may.  The Keykos notes: "There may be
policy here if there is competition for output bandwidth."  The engine's
policy is `PriorityScheduler` (urgency classes, weights within a class);
`RoundRobinScheduler` is the plain one it reduces to when every channel
has the same priority and sends whole chunks.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from operator import attrgetter
from typing import Generic, Protocol, TypeVar

__all__ = [
    "PriorityScheduler",
    "RoundRobinScheduler",
    "Schedulable",
    "Scheduler",
]


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
    #: its urgency class, 0 (most urgent) to 7 (set by the engine through
    #: `Scheduler.setPriority` only)
    urgency: int
    #: its weight within the class, 1 to 256 (set as ``urgency`` is)
    weight: int
    #: payload bytes it has sent so far (its send offset; the engine's)
    offset: int
    #: the ``offset`` at which its current turn ends (kept by the scheduler)
    turnEnd: int


C = TypeVar("C", bound=Schedulable)


class Scheduler(Protocol[C]):
    """
    The ready queue of a session's outbound channels, and its policy.  A
    channel is in line (`add`) when it has something it may send; the
    engine takes the next (`next`), lets it send a chunk, and puts it back
    (`yieldTurn`) if it has more.  A channel out of session credit waits
    apart (`park`) until the peer grants more (`unpark`).
    """

    #: the engine's largest chunk, in bytes (kept up to date by the engine):
    #: a policy that shares by bytes sizes its turns by it
    quantum: int
    #: the channels in line, in the order `next` takes them, for reading
    #: only: the engine asks whether any is (``while line``), for every
    #: chunk, by a deque's length taken in C rather than by a call
    line: deque[C]

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
        How many channels are in line (``len(line)``).
        """

    @property
    def parked(self) -> bool:
        """
        Whether any channel waits for session credit.
        """

    def setPriority(self, ch: C, urgency: int, weight: int) -> None:
        """
        Give ``ch`` a new urgency and weight (valid ones: see
        `memux.settings.checkPriority`), and its place in line to match.
        """

    def outranks(self, ch: C) -> bool:
        """
        Whether a channel in line goes before ``ch``, which is not in line,
        whatever their turns (so ``ch`` should not send yet).
        """


class _ReadyQueue(Generic[C]):
    """
    What every scheduler here shares: its ready queue (`line`, a deque the
    engine reads directly, so that "is any other channel in line?", asked
    for every chunk, is a length taken in C), and the channels waiting for
    session credit, kept apart in the order they were parked.  Subclasses
    say how a channel gets in line (``add``).

    The schedulers hold their deque rather than being one (as they once
    were) so that mypyc can compile them: a compiled subclass of ``deque``
    crashes when instantiated (likely mypyc issue 1186, seen with
    ``defaultdict``).  Compiled, the engine's calls to them are C calls.
    """

    __slots__ = ("line", "_parked", "quantum")

    def __init__(self, quantum: int = 65536) -> None:
        self.line: deque[C] = deque()
        self._parked: dict[int, C] = {}
        #: the payload bytes of a default-weight turn: the largest chunk
        #: (round robin ignores it: its turns are chunks)
        self.quantum = quantum

    def __len__(self) -> int:
        """
        How many channels are in line.
        """
        return len(self.line)

    def add(self, ch: C) -> None:
        raise NotImplementedError

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


class RoundRobinScheduler(_ReadyQueue[C]):
    """
    Fair round robin by chunk: each channel in line sends one chunk in
    turn, so a long message on one channel never holds up the others.
    Parked channels come back in the order they were parked.
    """

    __slots__ = ()

    def add(self, ch: C) -> None:
        """
        Put ``ch``, which has something to send, in line (if not already).
        """
        if not ch.scheduled:
            ch.scheduled = True
            self.line.append(ch)

    def next(self) -> C | None:
        """
        Take the channel whose turn it is (None if none is in line).
        """
        if not self.line:
            return None
        ch = self.line.popleft()
        ch.scheduled = False
        return ch

    def yieldTurn(self, ch: C) -> None:
        """
        ``ch`` had its turn and has more: back in line.
        """
        ch.scheduled = True
        self.line.append(ch)

    def setPriority(self, ch: C, urgency: int, weight: int) -> None:
        """
        Record ``ch``'s urgency and weight; round robin ignores them.
        """
        ch.urgency = urgency
        ch.weight = weight

    def outranks(self, ch: C) -> bool:
        """
        No channel goes before another in round robin.
        """
        return False


#: The default weight (`memux.settings.DEFAULT_WEIGHT`, which a test holds
#: equal): a channel of this weight has one quantum per turn.
_UNIT_WEIGHT = 16

_urgency = attrgetter("urgency")


class PriorityScheduler(_ReadyQueue[C]):
    """
    Urgency classes, and weights within a class: the channels in line are
    one deque ordered by urgency (most urgent first, round robin within a
    class), so the next channel is always the head.

    - A more urgent ready channel always goes first: a less urgent one
      sends only while none more urgent has anything it may send (the
      documented meaning of urgency; starvation across classes is the
      point).
    - Within a class, deficit round robin by bytes: a turn lets a channel
      send ``quantum * weight / 16`` payload bytes (at least one chunk);
      the chunk that crosses that line is charged to its next turn, so
      large and small chunks share by bytes, in proportion to weight, and
      no channel of a class waits for more than one round of the others.
      Frames without payload (FIN, an empty message) cost nothing.
    - With every channel at the same weight and sending whole chunks of
      ``quantum`` bytes (the engine keeps ``quantum`` equal to its largest
      chunk), each turn is one chunk: round robin by chunk, exactly as
      `RoundRobinScheduler`.

    The debt a channel may carry is at most one chunk (``quantum``): what
    it sent while it was alone in line is not held against it.
    """

    __slots__ = ()

    def _toBack(self, ch: C) -> None:
        """
        Put ``ch`` at the back of its class.
        """
        line = self.line
        if not line or line[-1].urgency <= ch.urgency:
            line.append(ch)  # the common case: one class, or the least urgent
        else:
            line.insert(bisect_right(line, ch.urgency, key=_urgency), ch)

    def add(self, ch: C) -> None:
        """
        Put ``ch``, which has something to send, in line (if not already),
        at the back of its class.
        """
        if not ch.scheduled:
            ch.scheduled = True
            line = self.line
            if not line or line[-1].urgency <= ch.urgency:
                line.append(ch)  # (`_toBack`, inline: once per write burst)
            else:
                line.insert(bisect_right(line, ch.urgency, key=_urgency), ch)

    def next(self) -> C | None:
        """
        Take the channel whose turn it is (None if none is in line): the
        head, once it has allowance left; one whose turn is spent starts a
        new one, or waits a round if its debt is larger than a turn.
        """
        line = self.line
        while line:
            ch = line.popleft()
            offset = ch.offset
            end = ch.turnEnd
            if offset < end:
                ch.scheduled = False  # its turn goes on
                return ch
            # Its turn is spent: a new one, after its debt (at most a chunk:
            # bytes sent with no one else in line are free).
            quantum = self.quantum
            if offset - end > quantum:
                end = offset - quantum
            weight = ch.weight
            if weight == _UNIT_WEIGHT:
                end += quantum
            else:
                end += max(1, quantum * weight // _UNIT_WEIGHT)
            ch.turnEnd = end
            if offset < end:
                ch.scheduled = False
                return ch
            self._toBack(ch)  # still in debt: it waits a round
        return None

    def yieldTurn(self, ch: C) -> None:
        """
        ``ch`` sent a chunk and has more: it goes on (to the front of its
        class) while its turn lasts, else to the back of its class.
        """
        ch.scheduled = True
        urgency = ch.urgency
        line = self.line
        if ch.offset < ch.turnEnd:
            if not line or line[0].urgency >= urgency:
                line.appendleft(ch)
            else:
                line.insert(bisect_left(line, urgency, key=_urgency), ch)
        elif not line or line[-1].urgency <= urgency:
            line.append(ch)  # (`_toBack`, inline: once per chunk)
        else:
            line.insert(bisect_right(line, urgency, key=_urgency), ch)

    def setPriority(self, ch: C, urgency: int, weight: int) -> None:
        """
        Give ``ch`` a new urgency and weight; if it is in line, it moves to
        the back of its new class.
        """
        if ch.scheduled and urgency != ch.urgency:
            self.line.remove(ch)
            ch.urgency = urgency
            ch.weight = weight
            ch.scheduled = False
            self.add(ch)
        else:
            ch.urgency = urgency
            ch.weight = weight

    def outranks(self, ch: C) -> bool:
        """
        Whether a more urgent channel than ``ch`` is in line.
        """
        line = self.line
        return bool(line) and line[0].urgency < ch.urgency
