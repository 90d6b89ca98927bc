"""The shaping proxy on real sockets: pair identification, delay, bandwidth, loss, extremes and events."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agent.errors import PortInUseError
from agent.network.check import (
    LinkPlan,
    binomial_bounds,
    echo_handler,
    measure_bandwidth,
    measure_round_trips,
    serve_all,
    sink_handler,
)
from agent.network.events import DegradeEvent, DisconnectEvent, PartitionEvent
from agent.network.profiles import LinkProfile
from agent.network.scenario import Scenario
from agent.network.serve import elevated_priority
from agent.network.shaper import ShapingLayer

pytestmark = pytest.mark.timeout(60)

MESSAGE = bytes(64)


def run_with_shaper(
    scenario: Scenario, body: Callable[[ShapingLayer], Awaitable[Any]], handler: Any = echo_handler
) -> Any:
    """Start a shaper with ``handler`` servers behind every agent, run ``body``, stop everything."""

    async def main() -> Any:
        shaper = ShapingLayer(scenario)
        await shaper.start()
        servers = await serve_all(shaper.addressing_table(), handler)
        try:
            return await body(shaper)
        finally:
            for server in servers:
                server.close()
            await asyncio.wait_for(shaper.stop(), 5)  # stopping never hangs, whatever is in flight

    # real-time while measuring (restored after), as the shaper process runs: other tests on 2 cores
    # must not add their CPU time to the delays under test
    with elevated_priority("realtime"):
        return asyncio.run(main())


async def connect(shaper: ShapingLayer, source: str, listener: int) -> tuple[asyncio.StreamReader, Any]:
    target = shaper.addressing(listener)
    return await asyncio.open_connection(target.announce_host, target.announce_port, local_addr=(source, 0))


async def round_trip_ms(reader: asyncio.StreamReader, writer: Any, timeout_s: float = 5.0) -> float:
    started = time.perf_counter()
    writer.write(MESSAGE)
    await asyncio.wait_for(reader.readexactly(len(MESSAGE)), timeout_s)
    return (time.perf_counter() - started) * 1000


async def median_rtt_ms(shaper: ShapingLayer, source: str, listener: int, samples: int = 5) -> float:
    reader, writer = await connect(shaper, source, listener)
    await round_trip_ms(reader, writer)  # pays the handshake
    rtts = [await round_trip_ms(reader, writer) for _ in range(samples)]
    writer.close()
    return statistics.median(rtts)


def three_sites() -> Scenario:
    """Agents 0, 1, 2 in their own regions: 0-1 at 60 ms, 1-2 at 120 ms, 0-2 perfect (the default)."""
    return Scenario.model_validate(
        {
            "regions": [{"name": f"r{i}", "agents": [i]} for i in range(3)],
            "region_links": [
                {"between": ["r0", "r1"], "profile": {"rtt_ms": 60}},
                {"between": ["r1", "r2"], "profile": {"rtt_ms": 120}},
            ],
        }
    )


def test_source_address_picks_the_link() -> None:
    async def body(shaper: ShapingLayer) -> dict[str, float]:
        hosts = [shaper.addressing(i).listen_host for i in range(3)]
        assert hosts == ["127.0.0.10", "127.0.0.11", "127.0.0.12"]
        assert [shaper.addressing(i).announce_host for i in range(3)] == [
            "127.0.1.10",
            "127.0.1.11",
            "127.0.1.12",
        ]
        return {
            "0->1": await median_rtt_ms(shaper, hosts[0], 1),
            "2->1": await median_rtt_ms(shaper, hosts[2], 1),
            "0->2": await median_rtt_ms(shaper, hosts[0], 2),
            "unknown->1": await median_rtt_ms(shaper, "127.0.0.1", 1),
            "stats": shaper.stats(),
        }

    measured = run_with_shaper(three_sites(), body)
    assert 60 * 0.85 <= measured["0->1"] <= 60 * 1.15, measured
    assert 120 * 0.85 <= measured["2->1"] <= 120 * 1.15, measured
    assert measured["0->2"] < 5 and measured["unknown->1"] < 5, measured  # perfect / default
    pairs = {(row.dialer, row.listener): row for row in measured["stats"]}
    assert set(pairs) == {(0, 1), (2, 1), (0, 2), (None, 1)}
    assert all(row.bytes_to_listener == row.bytes_to_dialer == 6 * 64 for row in pairs.values())


def test_delay_handshake_and_bandwidth_match_the_profile() -> None:
    profile = LinkProfile(rtt_ms=100, bandwidth_mbps=8)
    plan = LinkPlan(dialer=0, listener=1, profile=profile, configured_rtt_ms=100)

    async def rtt_part(shaper: ShapingLayer) -> tuple[float, float]:
        reader, writer = await connect(shaper, shaper.addressing(0).listen_host, 1)
        first = await round_trip_ms(reader, writer)  # connect took no time on loopback: the handshake's RTT
        writer.close()
        samples = await measure_round_trips(plan, shaper.addressing_table(), 40, target_s=1.0)
        return first, statistics.median(samples.rtts_ms)

    async def bandwidth_part(shaper: ShapingLayer) -> float | None:
        return await measure_bandwidth(plan, shaper.addressing_table())

    scenario = Scenario(agents=2, default=profile)
    first, median = run_with_shaper(scenario, rtt_part)
    assert 2 * 100 * 0.85 <= first <= 2 * 100 * 1.15 + 20
    assert 100 * 0.85 <= median <= 100 * 1.15
    mbps = run_with_shaper(scenario, bandwidth_part, handler=sink_handler)
    assert mbps is not None and 8 * 0.85 <= mbps <= 8 * 1.15, mbps


def test_loss_stalls_within_binomial_bounds() -> None:
    profile = LinkProfile(rtt_ms=20, loss=0.1, min_rto_ms=100)
    plan = LinkPlan(dialer=1, listener=0, profile=profile, configured_rtt_ms=20)

    async def body(shaper: ShapingLayer) -> Any:
        samples = await measure_round_trips(plan, shaper.addressing_table(), 300, target_s=1.5)
        return samples, shaper.stats()

    samples, stats = run_with_shaper(Scenario(agents=2, default=profile), body)
    low, high = binomial_bounds(samples.messages, 1 - 0.9**2)
    assert samples.messages == 300 and low <= samples.drops <= high, (samples.drops, low, high)
    assert 20 * 0.85 <= statistics.median(samples.rtts_ms) <= 20 * 1.15
    assert sum(row.stalls for row in stats) >= samples.drops


def test_total_loss_and_five_second_latency_time_out_instead_of_hanging() -> None:
    async def body(shaper: ShapingLayer) -> list[Any]:
        outcomes = []
        for listener in (1, 2):
            reader, writer = await connect(shaper, shaper.addressing(0).listen_host, listener)
            started = time.perf_counter()
            with pytest.raises(TimeoutError):
                await round_trip_ms(reader, writer, timeout_s=1.0)
            outcomes.append(time.perf_counter() - started)
        outcomes.append(shaper.stats())
        return outcomes

    scenario = Scenario.model_validate(
        {
            "regions": [{"name": f"r{i}", "agents": [i]} for i in range(3)],
            "region_links": [
                {"between": ["r0", "r1"], "profile": {"loss": 1.0}},
                {"between": ["r0", "r2"], "profile": {"rtt_ms": 10_000}},
            ],
        }
    )
    started = time.perf_counter()
    lossy_s, slow_s, stats = run_with_shaper(scenario, body)
    assert lossy_s < 1.5 and slow_s < 1.5
    assert time.perf_counter() - started < 10  # including stop() with bytes held for seconds
    assert any(row.black_holes for row in stats if row.listener == 1)


def test_throughput_is_bandwidth_limited_not_latency_limited() -> None:
    profile = LinkProfile(rtt_ms=200)  # unlimited bandwidth
    plan = LinkPlan(
        dialer=0,
        listener=1,
        profile=profile.model_copy(update={"bandwidth_mbps": 1000}),
        configured_rtt_ms=200,
    )

    async def body(shaper: ShapingLayer) -> tuple[float | None, float]:
        started = time.perf_counter()
        rate = await measure_bandwidth(plan, shaper.addressing_table())  # 250 MB... capped at 32 MiB
        return rate, time.perf_counter() - started

    rate, elapsed = run_with_shaper(Scenario(agents=2, default=profile), body, handler=sink_handler)
    # 32 MiB in 64 KiB chunks: serial per-chunk delays would take 512 * 0.1 s; a delay queue needs ~1 RTT
    assert rate is not None and elapsed < 5.0, (rate, elapsed)


def test_partition_holds_bytes_until_healed_and_refuses_new_connections() -> None:
    scenario = Scenario(agents=3, default={"rtt_ms": 10, "min_rto_ms": 100})

    async def body(shaper: ShapingLayer) -> None:
        source = shaper.addressing(0).listen_host
        reader, writer = await connect(shaper, source, 1)
        await round_trip_ms(reader, writer)
        shaper.apply_event(PartitionEvent(agents=(1,), duration_s=0.6))
        started = time.perf_counter()
        writer.write(MESSAGE)
        held = asyncio.ensure_future(reader.readexactly(len(MESSAGE)))
        done, _ = await asyncio.wait({held}, timeout=0.3)
        assert not done  # held by the partition
        fresh_reader, _fresh = await connect(shaper, source, 1)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(fresh_reader.readexactly(1), 1.0)
        assert await median_rtt_ms(shaper, source, 2, samples=2) < 30  # 0 and 2 are on the same side
        await asyncio.wait_for(held, 2.0)
        held_s = time.perf_counter() - started
        assert 0.6 <= held_s <= 1.5  # released at the heal plus one RTO
        assert any(row.refused for row in shaper.stats())

    run_with_shaper(scenario, body)


def test_disconnect_resets_connections_then_recovers() -> None:
    scenario = Scenario(agents=2, default={"rtt_ms": 10})

    async def body(shaper: ShapingLayer) -> None:
        source = shaper.addressing(0).listen_host
        reader, writer = await connect(shaper, source, 1)
        await round_trip_ms(reader, writer)
        shaper.apply_event(DisconnectEvent(agents=(1,), duration_s=0.5))
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await round_trip_ms(reader, writer, timeout_s=1.0)
        await asyncio.sleep(0.6)
        assert await median_rtt_ms(shaper, source, 1, samples=2) < 30
        stats = shaper.stats()[0]
        assert stats.resets >= 1 and stats.connections == 2

    run_with_shaper(scenario, body)


def test_round_event_degrades_a_live_connection_and_timed_events_fire() -> None:
    scenario = Scenario.model_validate(
        {
            "agents": 2,
            "default": {"rtt_ms": 10},
            "events": [{"kind": "latency_spike", "extra_rtt_ms": 100, "at_s": 0.5, "duration_s": 60}],
        }
    )

    async def body(shaper: ShapingLayer) -> list[float]:
        reader, writer = await connect(shaper, shaper.addressing(1).listen_host, 0)
        await round_trip_ms(reader, writer)
        before = await round_trip_ms(reader, writer)
        shaper.apply_event(DegradeEvent(agents=(1,), profile={"rtt_ms": 150}, at_round=20))
        degraded = await round_trip_ms(reader, writer)
        await asyncio.sleep(max(0.0, 0.6 - (asyncio.get_running_loop().time() - shaper._origin)))
        spiked = await round_trip_ms(reader, writer)
        return [before, degraded, spiked]

    before, degraded, spiked = run_with_shaper(scenario, body)
    assert before < 20 and 150 * 0.85 <= degraded <= 150 * 1.15 and 250 * 0.85 <= spiked <= 250 * 1.15


def test_unstable_losses_reset_the_connection() -> None:
    scenario = Scenario(agents=2, default={"rtt_ms": 5, "loss": 0.3, "reset_fraction": 1.0})

    async def body(shaper: ShapingLayer) -> int:
        reader, writer = await connect(shaper, shaper.addressing(0).listen_host, 1)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            for _ in range(100):
                await round_trip_ms(reader, writer, timeout_s=2.0)
        return shaper.stats()[0].resets

    assert run_with_shaper(scenario, body) == 1


def test_busy_base_port_is_a_clear_error() -> None:
    async def body() -> None:
        first = ShapingLayer(Scenario(agents=2), base_port=47310)
        await first.start()
        try:
            with pytest.raises(PortInUseError, match="pick another --base-port"):
                await ShapingLayer(Scenario(agents=2), base_port=47310).start()
            assert [first.addressing(i).announce_port for i in range(2)] == [47310, 47311]
        finally:
            await first.stop()

    asyncio.run(body())
