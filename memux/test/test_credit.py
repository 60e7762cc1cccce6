# -*- test-case-name: memux.test.test_credit -*-
"""
Receive-window auto-tuning (`memux._credit.CreditTuning`): the rule on its
own, and through an engine, where the windows it grows must keep every
memory bound.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from memux._credit import LATENCY_WINDOW, CreditTuning, CreditWindow
from memux._engine import MemuxEngine
from memux._wire import CreditFrame, DataFrame, OpenFrame
from memux.settings import SessionSettings
from memux.test._fakes import RawPeer

KiB = 1024
MiB = 1024 * KiB


def sendData(raw: RawPeer, cid: int, n: int) -> None:
    """
    Send ``n`` bytes on ``cid`` in frames the engine accepts (16 KiB).
    """
    while n:
        size = min(n, 16384)
        raw.send(DataFrame(cid, b"d" * size))
        n -= size


def granted(window: CreditWindow, tuning: CreditTuning, at: float) -> int:
    """
    Consume what is due at time ``at`` (receiving it first) and grant: the
    window the grant used.
    """
    tuning.now = at
    need = window.grantAt - window.consumed
    window.receive(need)
    limit = window.consume(need, tuning)
    assert limit is not None
    return window.window


class RuleTests(SynchronousTestCase):
    """
    When a channel's window grows, stops growing, and shrinks.
    """

    def test_growsWhenWindowBound(self) -> None:
        """
        Grants that come faster than two round trips double the window,
        grant by grant, up to the maximum and no further.
        """
        tuning = CreditTuning(1 * MiB, 8 * MiB)
        tuning.sample(0.010)
        window = CreditWindow(1 * MiB)
        sizes = [granted(window, tuning, 0.005 * i) for i in range(1, 7)]
        self.assertEqual(sizes, [2 * MiB, 4 * MiB, 8 * MiB, 8 * MiB, 8 * MiB, 8 * MiB])
        self.assertEqual(window.limit, window.consumed + 8 * MiB)

    def test_noGrowthWithoutRoundTrip(self) -> None:
        """
        With no round-trip sample yet nothing grows, and the grant asks for
        one (`wantsRtt`); once a sample is under way it is not asked again.
        """
        tuning = CreditTuning(1 * MiB, 8 * MiB)
        window = CreditWindow(1 * MiB)
        self.assertFalse(tuning.wantsRtt)
        self.assertEqual(granted(window, tuning, 0.001), 1 * MiB)
        self.assertTrue(tuning.wantsRtt)
        tuning.wantsRtt, tuning.pinging = False, True  # as the session does
        self.assertEqual(granted(window, tuning, 0.002), 1 * MiB)
        self.assertFalse(tuning.wantsRtt)

    def test_slowGrantsDoNotGrow(self) -> None:
        """
        Grants two round trips or more apart (a reader or a link slower
        than the window allows) leave the window as it is.
        """
        tuning = CreditTuning(1 * MiB, 8 * MiB)
        tuning.sample(0.010)
        window = CreditWindow(1 * MiB)
        sizes = [granted(window, tuning, 0.025 * i) for i in range(1, 5)]
        self.assertEqual(sizes, [1 * MiB] * 4)

    def test_sameInstantDoesNotGrow(self) -> None:
        """
        Grants in the same instant (one read, or a reader catching up on
        what it held) carry no timing: no growth.
        """
        tuning = CreditTuning(1 * MiB, 8 * MiB)
        tuning.sample(0.010)
        window = CreditWindow(1 * MiB)
        self.assertEqual(granted(window, tuning, 0.003), 2 * MiB)
        sizes = [granted(window, tuning, 0.003) for _ in range(5)]
        self.assertEqual(sizes, [2 * MiB] * 5)

    def test_idleShrinks(self) -> None:
        """
        A grant after more than `SHRINK_AFTER_SECONDS` without one sets the
        window back to its initial size; it grows again when busy.
        """
        tuning = CreditTuning(1 * MiB, 8 * MiB)
        tuning.sample(0.010)
        window = CreditWindow(1 * MiB)
        for i in range(1, 4):
            granted(window, tuning, 0.005 * i)
        self.assertEqual(window.window, 8 * MiB)
        later = 0.015 + CreditTuning.SHRINK_AFTER_SECONDS + 0.5
        self.assertEqual(granted(window, tuning, later), 1 * MiB)
        self.assertEqual(granted(window, tuning, later + 0.005), 2 * MiB)

    def test_samplesSmoothed(self) -> None:
        """
        Round trips are smoothed as TCP smooths them (1/8 of each new
        sample); a sample ends the one under way and schedules the next.
        """
        tuning = CreditTuning(1 * MiB, 8 * MiB)
        tuning.pinging = True
        tuning.now = 3.0
        tuning.sample(0.008)
        self.assertEqual(tuning.rtt, 0.008)
        tuning.sample(0.016)
        self.assertAlmostEqual(tuning.rtt, 0.009)
        self.assertFalse(tuning.pinging)
        self.assertEqual(tuning.nextSample, 3.0 + CreditTuning.SAMPLE_EVERY_SECONDS)

    def test_settings(self) -> None:
        """
        The cap defaults to half the session window, at most 16 MiB;
        ``maxChannelCredit`` equal to ``channelCredit`` turns tuning off,
        and one outside [channelCredit, sessionCredit] is refused.
        """
        self.assertEqual(SessionSettings().channelCreditLimit, 16 * MiB)
        small = SessionSettings(channelCredit=64 * KiB, sessionCredit=1 * MiB)
        self.assertEqual(small.channelCreditLimit, 512 * KiB)
        self.assertIsNotNone(MemuxEngine(False).creditTuning)
        off = SessionSettings(maxChannelCredit=1 * MiB)
        self.assertIsNone(MemuxEngine(False, off).creditTuning)
        for bad in (512 * KiB, 64 * MiB):
            with self.assertRaises(ValueError) as raised:
                SessionSettings(maxChannelCredit=bad)
            self.assertIn("maxChannelCredit", str(raised.exception))


SETTINGS = SessionSettings(
    maxFrameSize=16384,
    channelCredit=64 * KiB,
    sessionCredit=256 * KiB,
    maxChannelCredit=256 * KiB,
)


class LatencyCapTests(SynchronousTestCase):
    """
    A grant in latency mode (`CreditWindow.grant`'s ``latency``): at most
    `LATENCY_WINDOW` past what is consumed.
    """

    def test_capped(self) -> None:
        """
        A latency-mode grant reaches `LATENCY_WINDOW` past what is
        consumed, is due again after half of it, never lowers the limit,
        and keeps the window.
        """
        for tuning in (None, CreditTuning(1 * MiB, 8 * MiB)):
            w = CreditWindow(1 * MiB)
            w.receive(1 * MiB)
            w.consumed = 768 * KiB  # the limit (1 MiB) is still ahead
            self.assertEqual(w.grant(tuning, True), 1 * MiB)  # never lowered
            w.consumed = 1 * MiB
            self.assertEqual(w.grant(tuning, True), 1 * MiB + LATENCY_WINDOW)
            self.assertEqual(w.grantAt, 1 * MiB + LATENCY_WINDOW // 2)
            self.assertEqual(w.window, 1 * MiB)

    def test_notResized(self) -> None:
        """
        Capped grants, however fast they come, neither grow the window
        nor set it back: the grants after latency mode offer the window
        the channel had.
        """
        tuning = CreditTuning(1 * MiB, 8 * MiB)
        tuning.sample(0.010)
        w = CreditWindow(2 * MiB)
        w.lastGrant = 0.5
        for i in range(1, 20):
            tuning.now = 0.5 + 0.001 * i
            n = w.grantAt - w.consumed
            w.receive(n)
            w.consumed += n
            w.grant(tuning, True)
        self.assertEqual(w.window, 2 * MiB)
        tuning.now += 0.001
        n = w.grantAt - w.consumed
        w.receive(n)
        w.consumed += n
        self.assertEqual(w.grant(tuning), w.consumed + 4 * MiB)  # grows again

    def test_capLifted(self) -> None:
        """
        Outside latency mode the next grant is a full window again.
        """
        w = CreditWindow(1 * MiB)
        w.receive(1 * MiB)
        w.consumed = 1 * MiB
        w.grant(None, True)
        self.assertEqual(w.grant(), 2 * MiB)

    def test_shrinkNeverLowersLimit(self) -> None:
        """
        A window set back to its initial size after a pause never lowers
        the limit already granted (the spec's MUST): the grant leaves it
        until what is consumed catches up.
        """
        tuning = CreditTuning(1 * MiB, 8 * MiB)
        tuning.sample(0.010)
        window = CreditWindow(1 * MiB)
        for i in range(1, 4):
            granted(window, tuning, 0.005 * i)
        self.assertEqual(window.window, 8 * MiB)
        before = window.limit
        later = 0.015 + CreditTuning.SHRINK_AFTER_SECONDS + 0.5
        self.assertEqual(granted(window, tuning, later), 1 * MiB)
        self.assertEqual(window.limit, before)

    @given(
        st.lists(
            st.tuples(st.integers(0, 1 << 20), st.booleans(), st.floats(0, 2)),
            max_size=50,
        ),
    )
    def test_neverLowered(self, steps: list[tuple[int, bool, float]]) -> None:
        """
        Whatever is consumed, whenever, in latency mode or not: the limit
        never goes down, and never reaches more than a window past what
        is consumed.
        """
        tuning = CreditTuning(256 * KiB, 4 * MiB)
        tuning.sample(0.010)
        w = CreditWindow(256 * KiB)
        for n, latency, later in steps:
            tuning.now += later
            n = min(n, w.limit - w.received)
            w.receive(n)
            w.consumed += n
            before = w.limit
            limit = w.grant(tuning, latency)
            self.assertGreaterEqual(limit, before)
            self.assertLessEqual(limit, max(before, w.consumed + w.window))


class EngineTests(SynchronousTestCase):
    """
    Auto-tuning in an engine, driven by a hand-made peer.
    """

    @settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(
            st.tuples(
                st.sampled_from([1, 3, 5]),
                st.sampled_from(["receive", "consume", "tick"]),
                st.integers(1, 32768),
            ),
            max_size=80,
        ),
        st.floats(0.0001, 0.05),
    )
    def test_boundsHold(self, ops: list[tuple[int, str, int]], rtt: float) -> None:
        """
        Whatever arrives, is consumed and whenever: the engine's grants
        equal those of policy objects given the same inputs (its inline
        copy of the policy is the policy), no channel's window exceeds the
        cap, no limit ever goes down, and the bytes held never exceed the
        session window.
        """
        engine = MemuxEngine(False, SETTINGS)
        tuning = engine.creditTuning
        assert tuning is not None
        tuning.sample(rtt)
        mirrorTuning = CreditTuning(64 * KiB, 256 * KiB)
        mirrorTuning.sample(rtt)
        raw = RawPeer(engine)
        channels = {c: CreditWindow(64 * KiB) for c in (1, 3, 5)}
        for cid in channels:
            raw.send(OpenFrame(cid, b"s"))
        now = 0.0
        sessionHeld = 0
        for cid, op, n in ops:
            mirror = channels[cid]
            ch = engine._channels[cid]
            before = ch.recv.limit
            if op == "tick":
                now += n / 1e6  # up to 33 ms
                tuning.now = mirrorTuning.now = now
            elif op == "receive":
                n = min(
                    n,
                    mirror.limit - mirror.received,
                    SETTINGS.sessionCredit - sessionHeld,
                    engine._sessionRecv.limit - engine._sessionRecv.received,
                )
                if n:
                    sendData(raw, cid, n)
                    mirror.receive(n)
                    sessionHeld += n
            else:
                n = min(n, mirror.held)
                if n:
                    engine.consumed(cid, n)
                    mirror.consume(n, mirrorTuning)
                    sessionHeld -= n
            raw.read()
            self.assertEqual(ch.recv.limit, mirror.limit)
            self.assertEqual(ch.recv.window, mirror.window)
            self.assertLessEqual(ch.recv.window, SETTINGS.channelCreditLimit)
            self.assertGreaterEqual(ch.recv.limit, before)
            self.assertLessEqual(engine._sessionRecv.held, SETTINGS.sessionCredit)

    def test_grownWindowGranted(self) -> None:
        """
        A channel consumed faster than the round trip is granted its grown
        window in its CREDIT frames: each raises the limit further past
        what was consumed, up to the cap.
        """
        engine = MemuxEngine(False, SETTINGS)
        tuning = engine.creditTuning
        assert tuning is not None
        tuning.sample(0.010)
        raw = RawPeer(engine)
        raw.send(OpenFrame(1, b"s"))
        raw.read()
        consumed = 0
        ahead = []
        for i in range(1, 8):
            tuning.now = 0.002 * i
            n = engine._channels[1].recv.limit - consumed
            n = min(n, engine._sessionRecv.limit - engine._sessionRecv.received)
            sendData(raw, 1, n)
            engine.consumed(1, n)
            consumed += n
            credits = [
                f.limit for f in raw.read() if isinstance(f, CreditFrame) and f.channel
            ]
            ahead += [limit - consumed for limit in credits]
        self.assertEqual(ahead[:3], [128 * KiB, 256 * KiB, 256 * KiB])
        self.assertEqual(max(ahead), SETTINGS.channelCreditLimit)
