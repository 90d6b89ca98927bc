"""Measuring emulated links on real sockets: the engine of ``hypergpu netem check``.

The check starts the shaper as its own process (exactly as a launcher does) with echo servers at the
agents' real addresses, then, for each link, opens connections from the dialer's own loopback
address through the listener's proxy and measures:

* **RTT**: the median round trip of small messages (one segment each), stalled ones excluded.
  It must be within 15% of the link's drawn RTT (within 5 ms when that is under 5 ms); for a varying
  link, within the range's bounds ± 15%.
* **drops**: a message whose round trip exceeds the midpoint between the slowest unstalled and the
  fastest stalled round trip (``(rtt_min + rtt_max + rto) / 2``), or whose connection is reset, is a
  drop. With per-direction segment loss ``p`` a round trip drops with ``q = 1 - (1 - p)^2``; the count
  over ``n`` messages must fall in the central 99% binomial interval of ``Binomial(n, q)``.
* **bandwidth**: one bulk transfer per capped link, timed at the receiver from its first to its last
  chunk, within 15% of the cap. This phase runs under the same scenario with loss switched off, so
  it measures the cap itself rather than TCP's reaction to loss (which the drop phase covers).

Scheduled and random events are left out: the check measures the static links.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import binom

from agent.errors import UserFacingError
from agent.network.conditions import NetworkConditions
from agent.network.process import ShaperProcess
from agent.network.profiles import LinkProfile
from agent.network.scenario import Scenario
from agent.network.shaper import AgentAddressing

MESSAGE_BYTES = 64
RTT_TOLERANCE = 0.15
BANDWIDTH_TOLERANCE = 0.15
SMALL_RTT_MS = 5.0
CONFIDENCE = 0.99
TARGET_PHASE_S = 10.0
MAX_CONNECTIONS_PER_LINK = 32
BANDWIDTH_SECONDS = 2.0
BANDWIDTH_CONCURRENCY = 6


class LinkCheckFailed(UserFacingError):
    """Some links do not behave as configured (the table above the message says which)."""

    exit_code = 1


@dataclass(frozen=True)
class LinkPlan:
    """One link to measure: ``dialer`` connects through ``listener``'s proxy."""

    dialer: int
    listener: int
    profile: LinkProfile
    configured_rtt_ms: float | None
    """The link's drawn RTT; ``None`` for a varying link (judged against its range)."""


@dataclass(frozen=True)
class LinkResult:
    """Configured and measured figures of one link, and the verdicts."""

    plan: LinkPlan
    messages: int
    measured_rtt_ms: float | None
    drops: int
    measured_mbps: float | None

    @property
    def expected_drop_rate(self) -> float:
        """Probability that one round trip of one-segment messages stalls or resets."""
        return 1.0 - (1.0 - self.plan.profile.loss) ** 2

    @property
    def drop_bounds(self) -> tuple[int, int]:
        """Central 99% binomial interval of the drop count over ``messages``."""
        return binomial_bounds(self.messages, self.expected_drop_rate)

    @property
    def rtt_ok(self) -> bool:
        """Whether the measured RTT matches the configuration (see the module docstring)."""
        if self.measured_rtt_ms is None:
            return False
        return rtt_within(self.plan.profile, self.plan.configured_rtt_ms, self.measured_rtt_ms)

    @property
    def drops_ok(self) -> bool:
        """Whether the drop count lies in the 99% interval."""
        low, high = self.drop_bounds
        return self.messages > 0 and low <= self.drops <= high

    @property
    def bandwidth_ok(self) -> bool | None:
        """Whether the measured rate is within 15% of the cap; ``None`` for unlimited links."""
        cap = self.plan.profile.bandwidth_mbps
        if cap is None:
            return None
        return self.measured_mbps is not None and abs(self.measured_mbps - cap) <= BANDWIDTH_TOLERANCE * cap

    @property
    def ok(self) -> bool:
        """All verdicts pass."""
        return self.rtt_ok and self.drops_ok and self.bandwidth_ok is not False


def binomial_bounds(trials: int, probability: float, confidence: float = CONFIDENCE) -> tuple[int, int]:
    """The central ``confidence`` interval of ``Binomial(trials, probability)`` as whole counts."""
    if trials <= 0:
        return (0, 0)
    low, high = binom.interval(confidence, trials, min(max(probability, 0.0), 1.0))
    return (int(low), int(high))


def rtt_within(profile: LinkProfile, configured_ms: float | None, measured_ms: float) -> bool:
    """RTT verdict: 15% of the drawn RTT (5 ms slack below 5 ms); a varying link's range ± 15%."""
    if configured_ms is None:
        low, high = profile.rtt_ms
        return low * (1 - RTT_TOLERANCE) <= measured_ms <= high * (1 + RTT_TOLERANCE)
    if configured_ms < SMALL_RTT_MS:
        return measured_ms <= SMALL_RTT_MS
    return abs(measured_ms - configured_ms) <= RTT_TOLERANCE * configured_ms


def stall_threshold_ms(profile: LinkProfile) -> float:
    """Round trips slower than this (ms) count as drops: midway between unstalled and stalled."""
    low, high = profile.rtt_ms
    return (low + high + profile.rto_ms) / 2.0


def plan_links(scenario: Scenario, agent_count: int, max_links: int, seed: int = 0) -> list[LinkPlan]:
    """Every unordered pair once (or a seeded sample of ``max_links``), alternating who dials whom."""
    conditions = NetworkConditions(scenario, agent_count)
    pairs = [(a, b) for a in range(agent_count) for b in range(a + 1, agent_count)]
    if len(pairs) > max_links:
        pairs = sorted(random.Random(seed).sample(pairs, max_links))
    plans = []
    for a, b in pairs:
        dialer, listener = (a, b) if (a + b) % 2 == 0 else (b, a)
        profile = conditions.profile(dialer, listener)
        configured = None if profile.is_varying else conditions.base_rtt_ms(dialer, listener)
        plans.append(LinkPlan(dialer, listener, profile, configured))
    return plans


# ---- servers behind the proxies -----------------------------------------------------------------------
async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def sink_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read an 8-byte length, then that many bytes; reply with the receive timeline as JSON."""
    try:
        (total,) = struct.unpack("!Q", await reader.readexactly(8))
        received = first_chunk = 0
        first_s = last_s = 0.0
        while received < total:
            data = await reader.read(min(1 << 20, total - received))
            if not data:
                break
            now = time.perf_counter()
            if received == 0:
                first_s, first_chunk = now, len(data)
            received += len(data)
            last_s = now
        reply = {"bytes": received, "first_chunk": first_chunk, "span_s": last_s - first_s}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve_all(
    addressing: list[AgentAddressing], handler: Callable[..., object]
) -> list[asyncio.Server]:
    servers = []
    for entry in addressing:
        servers.append(await asyncio.start_server(handler, entry.listen_host, entry.listen_port, backlog=512))
    return servers


# ---- RTT and drops ------------------------------------------------------------------------------------
@dataclass
class RoundTripSamples:
    rtts_ms: list[float]
    drops: int = 0
    messages: int = 0


async def _connect(source: str, target: AgentAddressing) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(target.announce_host, target.announce_port, local_addr=(source, 0))


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open_warm(source: str, target: AgentAddressing, timeout_s: float) -> Connection | None:
    """A connection past its first exchange (which pays the TCP handshake); ``None`` if that failed."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(_connect(source, target), timeout_s)
        writer.write(bytes(MESSAGE_BYTES))
        await asyncio.wait_for(reader.readexactly(MESSAGE_BYTES), timeout_s)
        return reader, writer
    except (TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError):
        if writer is not None:
            writer.transport.abort()
        return None


async def _ping_worker(
    plan: LinkPlan,
    source: str,
    target: AgentAddressing,
    count: int,
    samples: RoundTripSamples,
    barrier: asyncio.Barrier | None,
) -> None:
    """``count`` sequential round trips on one connection (a fresh one after each reset or time-out).

    The first connection is opened and warmed up before ``barrier``, so that the burst of connection
    set-ups of a whole check does not land in anyone's samples. A message that is reset, times out,
    or whose replacement connection cannot be opened counts as dropped.
    """
    profile = plan.profile
    threshold_s = stall_threshold_ms(profile) / 1000.0
    timeout_s = profile.rtt_ms[1] / 1000.0 + 16 * profile.rto_ms / 1000.0
    message = bytes(MESSAGE_BYTES)
    connection = await _open_warm(source, target, 2 * timeout_s)
    if barrier is not None:
        await barrier.wait()
    for _ in range(count):
        samples.messages += 1
        if connection is None:
            connection = await _open_warm(source, target, 2 * timeout_s)
            if connection is None:
                samples.drops += 1
                continue
        reader, writer = connection
        try:
            started = time.perf_counter()
            writer.write(message)
            await asyncio.wait_for(reader.readexactly(MESSAGE_BYTES), timeout_s)
            elapsed = time.perf_counter() - started
        except (TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError):
            samples.drops += 1  # reset, or a black hole
            writer.transport.abort()
            connection = None
            continue
        if elapsed > threshold_s:
            samples.drops += 1
        else:
            samples.rtts_ms.append(elapsed * 1000.0)
    if connection is not None:
        connection[1].close()


def connections_for(plan: LinkPlan, messages: int, target_s: float = TARGET_PHASE_S) -> int:
    """Parallel connections so that ``messages`` round trips take about ``target_s`` seconds."""
    profile = plan.profile
    expected_s = (sum(profile.rtt_ms) / 2 + (1 - (1 - profile.loss) ** 2) * profile.rto_ms) / 1000.0 + 0.001
    return max(1, min(MAX_CONNECTIONS_PER_LINK, math.ceil(messages * expected_s / target_s)))


async def measure_round_trips(
    plan: LinkPlan,
    addressing: list[AgentAddressing],
    messages: int,
    target_s: float = TARGET_PHASE_S,
    barrier: asyncio.Barrier | None = None,
) -> RoundTripSamples:
    """``messages`` round trips of one-segment messages over ``plan``'s link, spread over parallel
    connections so they take about ``target_s``; RTTs of unstalled ones, and the drop count.

    With ``barrier`` (``connections_for`` parties per link), sampling starts once every link's
    connections are open.
    """
    samples = RoundTripSamples(rtts_ms=[])
    workers = connections_for(plan, messages, target_s)
    share = [messages // workers + (1 if k < messages % workers else 0) for k in range(workers)]
    source = addressing[plan.dialer].listen_host
    target = addressing[plan.listener]
    await asyncio.gather(*(_ping_worker(plan, source, target, n, samples, barrier) for n in share))
    return samples


# ---- bandwidth ----------------------------------------------------------------------------------------
async def measure_bandwidth(plan: LinkPlan, addressing: list[AgentAddressing]) -> float | None:
    """Megabit/s of one bulk transfer through the (loss-free) link, timed at the receiver."""
    rate = plan.profile.bytes_per_second
    assert rate is not None
    total = int(min(32 << 20, max(256 << 10, rate * BANDWIDTH_SECONDS)))
    reader, writer = await _connect(addressing[plan.dialer].listen_host, addressing[plan.listener])
    try:
        writer.write(struct.pack("!Q", total))
        block = bytes(64 << 10)
        for offset in range(0, total, len(block)):
            writer.write(block[: min(len(block), total - offset)])
            await writer.drain()
        timeout = total / rate * 3 + 4 * plan.profile.rtt_ms[1] / 1000.0 + 10.0
        reply = json.loads(await asyncio.wait_for(reader.readline(), timeout))
    except (TimeoutError, ConnectionError, OSError, json.JSONDecodeError):
        return None
    finally:
        writer.close()
    if reply["bytes"] < total or reply["span_s"] <= 0:
        return None
    return (reply["bytes"] - reply["first_chunk"]) * 8 / reply["span_s"] / 1e6


# ---- the whole check ----------------------------------------------------------------------------------
async def run_check(
    scenario: Scenario,
    agent_count: int,
    messages: int = 1000,
    max_links: int = 64,
    progress: Callable[[str], None] | None = None,
    target_s: float = TARGET_PHASE_S,
) -> list[LinkResult]:
    """Measure the links of ``scenario`` (see the module docstring); one :class:`LinkResult` per link."""
    static = scenario.model_copy(update={"events": (), "random_events": None})
    plans = plan_links(static, agent_count, max_links, seed=scenario.seed)
    say = progress or (lambda _message: None)
    with tempfile.TemporaryDirectory(prefix="hypergpu-netem-") as workdir:
        say(f"RTT and drops: {len(plans)} links x {messages} messages")
        with ShaperProcess(static, agent_count, Path(workdir)) as shaper:
            addressing = shaper.addressing_table()
            servers = await serve_all(addressing, echo_handler)
            barrier = asyncio.Barrier(sum(connections_for(plan, messages, target_s) for plan in plans))
            try:
                samples = await asyncio.gather(
                    *(measure_round_trips(plan, addressing, messages, target_s, barrier) for plan in plans)
                )
            finally:
                for server in servers:
                    server.close()
        capped = [plan for plan in plans if plan.profile.bandwidth_mbps is not None]
        rates: dict[tuple[int, int], float | None] = {}
        if capped:
            say(f"bandwidth: {len(capped)} capped links, loss off")
            with ShaperProcess(static.without_loss(), agent_count, Path(workdir)) as shaper:
                addressing = shaper.addressing_table()
                servers = await serve_all(addressing, sink_handler)
                limit = asyncio.Semaphore(BANDWIDTH_CONCURRENCY)

                async def one(plan: LinkPlan) -> None:
                    async with limit:
                        rates[(plan.dialer, plan.listener)] = await measure_bandwidth(plan, addressing)

                try:
                    await asyncio.gather(*(one(plan) for plan in capped))
                finally:
                    for server in servers:
                        server.close()
    results = []
    for plan, sample in zip(plans, samples, strict=True):
        median = statistics.median(sample.rtts_ms) if sample.rtts_ms else None
        results.append(
            LinkResult(
                plan=plan,
                messages=sample.messages,
                measured_rtt_ms=median,
                drops=sample.drops,
                measured_mbps=rates.get((plan.dialer, plan.listener)),
            )
        )
    return results
