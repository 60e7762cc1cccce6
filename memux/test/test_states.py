# -*- test-case-name: memux.test.test_states -*-
"""
The engine's channel states against the specification's state table
(``doc/spec.rst``, "Channel states"): every row of the table is walked, on
a real engine, from its state by its event to its next state.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from memux._engine import MemuxEngine
from memux._wire import CreditFrame, DataFrame, ErrorCode, ResetFrame
from memux.codes import ChannelState
from memux.test._fakes import RawPeer
from memux.test._helpers import readSpec

S = ChannelState


def stateTable(text: str) -> list[tuple[list[ChannelState], str, ChannelState]]:
    """
    The rows of the spec's "State transitions" table: the states a row
    applies to, its event (as written), and the next state.
    """
    start = text.index(".. list-table:: State transitions")
    body = text[start : text.index("A side MUST send frames", start)]
    rows = re.split(r"\n   \* - ", body)[2:]  # (the header row first)
    table = []
    for row in rows:
        cells = [" ".join(c.split()) for c in re.split(r"\n     - ", row)]
        states = [ChannelState[name] for name in re.findall(r"[A-Z_]{4,}", cells[0])]
        match = re.match(r"[A-Z_]+", cells[2])
        assert match is not None, cells
        following = ChannelState[match.group()]
        table.append((states, cells[1], following))
    return table


class Walk:
    """
    A server engine with a hand-driven client peer: each scenario brings
    channel 1 (opened by the peer) or channel 2 (opened by us) to a state,
    then applies an event.
    """

    def __init__(self) -> None:
        self.engine = MemuxEngine(False)
        self.peer = RawPeer(self.engine)

    def state(self, channel: int) -> ChannelState:
        return self.engine.channelState(channel)

    # -- bringing a channel to a state

    def peerOpened(self, state: ChannelState) -> int:
        """
        Channel 1, opened by the peer, brought to ``state``.
        """
        self.peer.send(DataFrame(1, b"hello", open=True))
        if state in (S.HALF_CLOSED_LOCAL, S.CLOSED):
            self.engine.closeChannel(1)
            self.peer.read()
        if state is S.HALF_CLOSED_REMOTE:
            self.peer.send(DataFrame(1, fin=True))
        return 1

    # -- events

    def sendFin(self, channel: int) -> None:
        self.engine.closeChannel(channel)
        self.peer.read()

    def receiveFin(self, channel: int) -> None:
        self.peer.send(DataFrame(channel, fin=True))


class StateTableTests(SynchronousTestCase):
    """
    Each row of the spec's table of channel states holds for the engine.
    """

    def scenarios(self) -> dict[str, Callable[[ChannelState], None]]:
        """
        For each event of the table (as the spec words it), a check that
        starts from a given state.
        """
        return {
            "send or receive an opening frame without FIN": self.opening,
            "send an opening frame with FIN (DATA with OPEN and FIN)": (
                self.openingWithFinSent
            ),
            "receive an opening frame with FIN": self.openingWithFinReceived,
            "a higher id of the same parity is opened": self.skipped,
            "send DATA with FIN": self.finSent,
            "receive DATA with FIN": self.finReceived,
            "send or receive RESET (any code, including REFUSED)": self.reset,
            "receive DATA (after the peer's FIN)": self.dataAfterFin,
            "receive DATA without FIN, with a payload or END": self.dataAfterClose,
        }

    def test_everyRow(self) -> None:
        """
        Every row of the table has a check, and each holds from each state
        it names.
        """
        table = stateTable(readSpec())
        self.assertGreaterEqual(len(table), 11)
        scenarios = self.scenarios()
        for states, event, following in table:
            self.assertIn(event, scenarios, "a row of the spec's table not walked")
            for state in states:
                self.expected = following
                scenarios[event](state)

    def check(self, walk: Walk, channel: int, before: ChannelState) -> None:
        self.assertEqual(walk.state(channel), before)

    def opening(self, state: ChannelState) -> None:
        """
        IDLE to OPEN by sending (our channel 2) or receiving (channel 1)
        an opening frame.
        """
        walk = Walk()
        self.assertEqual(walk.state(1), S.IDLE)
        walk.peer.send(DataFrame(1, b"x", open=True))
        self.assertEqual(walk.state(1), self.expected)
        cid = walk.engine.openChannel(b"svc")
        self.assertEqual(walk.state(cid), S.IDLE)
        walk.peer.read()
        self.assertEqual(walk.state(cid), self.expected)

    def openingWithFinSent(self, state: ChannelState) -> None:
        """
        IDLE to HALF_CLOSED_LOCAL by sending an opening frame with FIN.
        """
        walk = Walk()
        cid = walk.engine.openChannel()
        walk.engine.sendData(cid, b"all", True)
        walk.engine.closeChannel(cid)
        self.assertEqual(walk.state(cid), S.IDLE)
        [frame] = [f for f in walk.peer.read() if isinstance(f, DataFrame)]
        self.assertTrue(frame.open and frame.fin)
        self.assertEqual(walk.state(cid), self.expected)

    def openingWithFinReceived(self, state: ChannelState) -> None:
        """
        IDLE to HALF_CLOSED_REMOTE by receiving an opening frame with FIN.
        """
        walk = Walk()
        walk.peer.send(DataFrame(1, b"all", open=True, fin=True))
        self.assertEqual(walk.state(1), self.expected)

    def skipped(self, state: ChannelState) -> None:
        """
        An id below one the peer opened, never opened itself, is CLOSED.
        """
        walk = Walk()
        self.assertEqual(walk.state(1), S.IDLE)
        walk.peer.send(DataFrame(3, b"x", open=True))
        self.assertEqual(walk.state(1), self.expected)

    def finSent(self, state: ChannelState) -> None:
        """
        Sending FIN: OPEN to HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE to CLOSED.
        """
        walk = Walk()
        cid = walk.peerOpened(state)
        self.check(walk, cid, state)
        walk.sendFin(cid)
        self.assertEqual(walk.state(cid), self.expected)

    def finReceived(self, state: ChannelState) -> None:
        """
        Receiving FIN: OPEN to HALF_CLOSED_REMOTE, HALF_CLOSED_LOCAL to
        CLOSED.
        """
        walk = Walk()
        cid = walk.peerOpened(state)
        self.check(walk, cid, state)
        walk.receiveFin(cid)
        self.assertEqual(walk.state(cid), self.expected)

    def reset(self, state: ChannelState) -> None:
        """
        A RESET, received or sent, closes the channel from any open state.
        """
        for sent in (False, True):
            walk = Walk()
            cid = walk.peerOpened(state)
            self.check(walk, cid, state)
            if sent:
                walk.engine.resetChannel(cid, ErrorCode.CANCEL)
            else:
                walk.peer.send(ResetFrame(cid, ErrorCode.REFUSED))
            self.assertEqual(walk.state(cid), self.expected)

    def dataAfterFin(self, state: ChannelState) -> None:
        """
        DATA after the peer's FIN closes the channel with RESET
        PROTOCOL_ERROR.
        """
        walk = Walk()
        cid = walk.peerOpened(state)
        self.check(walk, cid, state)
        walk.peer.send(DataFrame(cid, b"more"))
        self.assertEqual(walk.state(cid), self.expected)
        resets = [f for f in walk.peer.read() if isinstance(f, ResetFrame)]
        self.assertEqual([r.code for r in resets], [ErrorCode.PROTOCOL_ERROR])

    def dataAfterClose(self, state: ChannelState) -> None:
        """
        With reading stopped and our FIN out, DATA without FIN closes the
        channel with RESET NO_ERROR (with FIN, it simply closes it: see
        the row for receiving FIN).
        """
        walk = Walk()
        cid = walk.peerOpened(S.OPEN)
        walk.engine.consumed(cid, 5)
        walk.engine.closeChannel(cid, stopReading=True)
        walk.peer.read()
        self.check(walk, cid, state)
        walk.peer.send(DataFrame(cid, b"late"), CreditFrame(0, 1 << 30))
        self.assertEqual(walk.state(cid), self.expected)
        resets = [f for f in walk.peer.read() if isinstance(f, ResetFrame)]
        self.assertEqual([r.code for r in resets], [ErrorCode.NO_ERROR])
