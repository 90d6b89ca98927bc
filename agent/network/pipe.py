"""One direction of one proxied TCP connection: a delay queue that shapes the bytes crossing it.

The reading side takes each chunk as it comes, decides when the link would deliver it (bandwidth via
the link's shared :class:`TokenBucket`, half the RTT with jitter, loss stalls) and queues it with that
timestamp; the writing side sleeps until each timestamp and writes. Reading never waits for delivery,
so many chunks are in flight at once and throughput is limited by bandwidth and the in-flight limit
(like a TCP window), not by latency. Delivery times never decrease, so the stream stays in order.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from agent.network.conditions import NetworkConditions, PeerIndex
from agent.network.impairment import one_way_delay_s, sample_loss
from agent.network.token_bucket import TokenBucket

READ_CHUNK_BYTES = 64 * 1024


class WakeupCalibration:
    """How late the event loop wakes after a timed sleep, learned as it runs, so pipes can aim early.

    epoll (hence asyncio) rounds sleep timeouts up to whole milliseconds, and on a busy machine the
    process waits for a core after waking: sleeps end 0.5 to several ms late, which would add 10-20% to
    a 10 ms link. Pipes sleep ``early_s`` less than asked and report how late they really woke.
    ``early_s`` tracks the *median* lateness a zero-aim sleep would have had (a stochastic quantile
    estimate, steps of ``step_s``): the occasional very late wake-up under load must not pull every
    other delivery early, as a mean would.

    Args:
        step_s: how far one observation moves the estimate, seconds.
        max_early_s: never aim earlier than this.
    """

    def __init__(self, step_s: float = 0.00002, max_early_s: float = 0.003) -> None:
        self._step = step_s
        self._max = max_early_s
        self.early_s = 0.0005

    def observe(self, lateness_s: float) -> None:
        """Record that a sleep aimed ``early_s`` early woke ``lateness_s`` after its target (< 0 = early)."""
        would_have_been = lateness_s + self.early_s
        step = self._step if would_have_been > self.early_s else -self._step
        self.early_s = min(self._max, max(0.0, self.early_s + step))


class ConnectionResetByLink(Exception):
    """The emulated link reset the connection (a loss on a link with ``reset_fraction``)."""


@dataclass
class PipeCounters:
    """Running totals of one direction of one connection, summed by the shaper into pair stats."""

    bytes_delivered: int = 0
    stalls: int = 0
    black_holes: int = 0
    stalled_s: float = 0.0


@dataclass
class PipeEnds:
    """Where a pipe reads from and writes to."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class ShapedPipe:
    """Moves bytes from ``ends.reader`` to ``ends.writer`` as the link ``sender -> receiver`` would.

    Args:
        conditions: the live link state (profile, RTT, partitions) consulted per chunk.
        sender, receiver: agent indices of the two ends (``None`` = unknown peer).
        ends: the stream to read and the stream to write.
        bucket: the link's bandwidth scheduler for this direction, shared by all connections of the
            pair, or ``None`` when unlimited. Its rate is refreshed from the profile per chunk.
        rng: this pipe's random generator (jitter and loss draws).
        clock_origin: loop time (s) at which the shaper started (event times are relative to it).
        not_before: loop time (s) before which nothing is sent: when this end's TCP handshake is done.
        max_in_flight_bytes: stop reading while this many bytes wait for delivery (back-pressure).
        changed: returns an awaitable that completes when link conditions next change.
        wakeup: the shaper's shared estimate of timer lateness.
    """

    def __init__(
        self,
        conditions: NetworkConditions,
        sender: PeerIndex,
        receiver: PeerIndex,
        ends: PipeEnds,
        bucket: Callable[[], TokenBucket | None],
        rng: random.Random,
        clock_origin: float,
        not_before: float,
        max_in_flight_bytes: int,
        changed: Callable[[], asyncio.Future[None]],
        wakeup: WakeupCalibration,
    ) -> None:
        self._conditions = conditions
        self._sender = sender
        self._receiver = receiver
        self._ends = ends
        self._bucket = bucket
        self._rng = rng
        self._origin = clock_origin
        self._send_not_before = not_before
        self._last_delivery = 0.0
        self._max_in_flight = max_in_flight_bytes
        self._changed = changed
        self._wakeup = wakeup
        self._queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        self._in_flight = 0
        self._space = asyncio.Event()
        self._space.set()
        self.counters = PipeCounters()

    async def read_side(self) -> None:
        """Read chunks, timestamp them, queue them; queue ``None`` at end of stream."""
        loop = asyncio.get_running_loop()
        black_hole = False
        while True:
            data = await self._ends.reader.read(READ_CHUNK_BYTES)
            if not data:
                await self._queue.put(None)
                return
            if black_hole:  # keep reading so a close is noticed, but deliver nothing
                continue
            while self._in_flight >= self._max_in_flight:
                self._space.clear()
                await self._space.wait()
            now = loop.time()
            profile = self._conditions.profile(self._sender, self._receiver)
            rtt_ms = self._conditions.rtt_ms(self._sender, self._receiver, now - self._origin)
            bucket = self._bucket()
            sent = max(now, self._send_not_before)  # nothing leaves before the handshake is done
            crossed = sent if bucket is None else bucket.reserve(len(data), sent)
            delivery = crossed + one_way_delay_s(profile, rtt_ms, self._rng)
            loss = sample_loss(profile, len(data), self._rng)
            if loss.reset:
                raise ConnectionResetByLink(f"link {self._sender}->{self._receiver} reset the connection")
            if loss.black_hole:
                black_hole = True
                self.counters.black_holes += 1
                continue
            if loss.stall_s:
                self.counters.stalls += 1
                self.counters.stalled_s += loss.stall_s
                delivery += loss.stall_s
            self._last_delivery = max(self._last_delivery, delivery)
            self._in_flight += len(data)
            await self._queue.put((self._last_delivery, data))

    async def write_side(self) -> None:
        """Deliver queued chunks at their times, holding them while the link is partitioned."""
        loop = asyncio.get_running_loop()
        writer = self._ends.writer
        while True:
            item = await self._queue.get()
            if item is None:
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()
                return
            delivery, data = item
            early = self._wakeup.early_s
            if delivery - loop.time() > early:
                await asyncio.sleep(delivery - loop.time() - early)
                self._wakeup.observe(loop.time() - delivery)
            if self._conditions.is_partitioned(self._sender, self._receiver):
                while self._conditions.is_partitioned(self._sender, self._receiver):
                    await self._changed()
                # the held segment gets through at the next retransmission after the heal
                rto_s = self._conditions.profile(self._sender, self._receiver).rto_ms / 1000.0
                await asyncio.sleep(rto_s)
            writer.write(data)
            await writer.drain()
            self.counters.bytes_delivered += len(data)
            self._in_flight -= len(data)
            self._space.set()
