"""Live link state: RTT draws, events in force, expiry, restore; no sockets, the clock passed in."""

from __future__ import annotations

from agent.network.conditions import NetworkConditions
from agent.network.events import (
    DegradeEvent,
    DisconnectEvent,
    LatencySpikeEvent,
    PartitionEvent,
    RestoreEvent,
)
from agent.network.scenario import Scenario, load_scenario


def test_rtt_draws_are_symmetric_deterministic_and_in_range() -> None:
    scenario = Scenario(default="poor", agents=6, seed=4)
    first, second = NetworkConditions(scenario, 6), NetworkConditions(scenario, 6)
    draws = {(a, b): first.base_rtt_ms(a, b) for a in range(6) for b in range(a + 1, 6)}
    assert all(150 <= rtt <= 300 for rtt in draws.values())
    assert len({round(rtt, 6) for rtt in draws.values()}) > 10  # links differ
    assert all(second.base_rtt_ms(b, a, now_s=100) == rtt for (a, b), rtt in draws.items())  # fixed links
    other_seed = NetworkConditions(scenario.model_copy(update={"seed": 5}), 6)
    assert other_seed.base_rtt_ms(0, 1) != draws[(0, 1)]


def test_varying_links_redraw_every_interval() -> None:
    conditions = NetworkConditions(Scenario(default="unstable", agents=2), 2)
    samples = [conditions.base_rtt_ms(0, 1, now_s=t) for t in (0.0, 1.9, 2.0, 4.5, 6.1, 8.0)]
    assert samples[0] == samples[1]  # same 2-second epoch
    assert len(set(samples)) >= 4
    assert all(50 <= s <= 500 for s in samples)


def test_degrade_spike_and_expiry() -> None:
    conditions = NetworkConditions(load_scenario("regions3"), 8)
    assert conditions.rtt_ms(3, 4, now_s=0) == 10
    degrade = conditions.apply(DegradeEvent(agents=(3,), profile="poor"), now_s=1.0)
    assert conditions.profile(3, 4).loss == 0.05 and conditions.rtt_ms(3, 4, 1.0) >= 150
    assert conditions.profile(4, 5).rtt_ms == (10, 10)  # other links untouched
    spike = conditions.apply(LatencySpikeEvent(agents=(5,), extra_rtt_ms=300, duration_s=5), now_s=2.0)
    assert conditions.rtt_ms(4, 5, 2.0) == 310 and conditions.rtt_ms(0, 1, 2.0) == 10
    assert conditions.expire_due(now_s=6.9) == []
    assert conditions.expire_due(now_s=7.0) == [spike.effect_id]
    assert conditions.rtt_ms(4, 5, 7.0) == 10
    assert degrade is not None and conditions.expire(degrade.effect_id)
    assert conditions.rtt_ms(3, 4, 8.0) == 10
    global_spike = LatencySpikeEvent(extra_rtt_ms=50)
    conditions.apply(global_spike, now_s=9.0)
    assert conditions.rtt_ms(0, 1, 9.0) == 60 and conditions.rtt_ms(None, 2, 9.0) == 50


def test_partition_cuts_only_across_the_set() -> None:
    conditions = NetworkConditions(load_scenario("regions3"), 8)
    conditions.apply(PartitionEvent(agents=(5, 6, 7)), now_s=0)
    assert conditions.is_partitioned(5, 0) and conditions.is_partitioned(1, 7)
    assert not conditions.is_partitioned(5, 7) and not conditions.is_partitioned(0, 1)
    assert conditions.is_partitioned(None, 6)  # an unknown peer is outside the set
    assert conditions.is_blocked(0, 6) and not conditions.is_disconnected(0, 6)


def test_disconnect_and_restore() -> None:
    conditions = NetworkConditions(load_scenario("regions3"), 8)
    version = conditions.version
    conditions.apply(DisconnectEvent(agents=(2,)), now_s=0)
    conditions.apply(LatencySpikeEvent(agents=(4,), extra_rtt_ms=100), now_s=0)
    assert conditions.version > version
    assert conditions.is_disconnected(2, 6) and conditions.is_disconnected(None, 2)
    assert not conditions.is_disconnected(0, 1)
    assert conditions.apply(RestoreEvent(agents=(2,)), now_s=1) is None
    assert not conditions.is_disconnected(2, 6)
    assert conditions.extra_rtt_ms(4, 5) == 100  # the spike on agent 4 is not agent 2's
    conditions.apply(RestoreEvent(), now_s=2)
    assert conditions.active_effects() == []
