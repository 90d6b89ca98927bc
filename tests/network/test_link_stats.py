"""Link estimators, quality classes with hysteresis, alerts and the compact DHT summary."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from agent.network.link_stats import (
    AlertKind,
    LinkConfig,
    LinkEstimator,
    PeerMonitor,
    QualityClass,
    Trend,
    class_of_score,
    decode_link_summary,
    encode_link_summary,
)
from agent.network.profiles import BUILTIN_PROFILES

FIXED_NOW = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)


def _monitor() -> PeerMonitor:
    return PeerMonitor(now=lambda: FIXED_NOW)


def _profile_pings(name: str, seed: int, count: int) -> list[float | None]:
    """Pings over a link shaped like agent.network.profiles' ``name``.

    As the emulator applies it: a base RTT drawn once from the profile's range (re-drawn every 2 pings
    for a varying profile, i.e. every 2 s at one ping per second), uniform jitter of ± jitter/2, and
    the segment loss applied in each direction, a lost exchange reported as a missing answer. The base
    RTT is drawn from the inner 80% of the range (log scale): at the very edges two profiles overlap.
    """
    profile = BUILTIN_PROFILES[name]
    rng = random.Random(seed)
    low, high = profile.rtt_ms

    def draw() -> float:
        if low == high:
            return low
        inner = rng.uniform(0.1, 0.9)
        return math.exp(math.log(low) + inner * (math.log(high) - math.log(low)))

    base = draw()
    pings: list[float | None] = []
    for index in range(count):
        if profile.is_varying and index % 2 == 0:
            base = rng.uniform(low, high)
        lost = rng.random() < profile.loss or rng.random() < profile.loss
        pings.append(None if lost else max(0.0, base + rng.uniform(-0.5, 0.5) * profile.jitter_ms))
    return pings


EXPECTED_CLASS = {
    "perfect": QualityClass.EXCELLENT,
    "good": QualityClass.GOOD,
    "average": QualityClass.FAIR,
    "poor": QualityClass.POOR,
}


@pytest.mark.parametrize("profile", sorted(EXPECTED_CLASS))
def test_steady_profiles_get_their_class(profile: str) -> None:
    for seed in range(8):
        monitor = _monitor()
        classes: Counter[QualityClass | None] = Counter()
        for index, rtt in enumerate(_profile_pings(profile, seed, 500)):
            monitor.observe_ping("peer", rtt)
            if index >= 250:  # once the 200-ping loss window is full
                classes[monitor.estimator("peer").quality] += 1
        share = classes[EXPECTED_CLASS[profile]] / classes.total()
        assert share >= 0.95, f"{profile} seed {seed}: classes {dict(classes)}"


def test_unstable_profile_is_critical_most_of_the_time_and_never_better_than_poor() -> None:
    critical_runs = 0
    for seed in range(8):
        monitor = _monitor()
        classes: Counter[QualityClass | None] = Counter()
        for index, rtt in enumerate(_profile_pings("unstable", seed, 500)):
            monitor.observe_ping("peer", rtt)
            if index >= 250:
                classes[monitor.estimator("peer").quality] += 1
        assert set(classes) <= {QualityClass.POOR, QualityClass.CRITICAL}, dict(classes)
        critical_runs += classes.most_common(1)[0][0] is QualityClass.CRITICAL
    assert critical_runs >= 6


def test_hysteresis_stops_a_noisy_series_near_a_boundary_from_flapping() -> None:
    # Without loss, the GOOD/FAIR boundary (76 points) sits at about 63 ms of RTT + jitter.
    rng = random.Random(7)
    link = LinkEstimator()
    raw_changes = held_changes = 0
    last_raw = last_held = None
    for _ in range(2000):
        link.add_ping(rng.gauss(56.0, 6.0))
        if link.quality is None:
            continue
        raw = class_of_score(link.score)
        raw_changes += last_raw is not None and raw != last_raw
        held_changes += last_held is not None and link.quality != last_held
        last_raw, last_held = raw, link.quality
    assert raw_changes >= 20, "the series must really cross the boundary for this test to mean anything"
    assert held_changes <= 2


def test_hysteresis_still_follows_a_real_change() -> None:
    link = LinkEstimator()
    for _ in range(50):
        link.add_ping(20.0)
    assert link.quality is QualityClass.GOOD
    for _ in range(60):
        link.add_ping(900.0)
    assert link.quality is QualityClass.POOR  # without loss a slow link scores at least 50 points


def test_rtt_ewma_jitter_loss_and_window() -> None:
    link = LinkEstimator(LinkConfig(ewma_alpha=0.5, jitter_window=4, loss_window=10))
    for rtt in (100.0, 200.0):
        link.add_ping(rtt)
    assert link.rtt_ewma_ms == pytest.approx(150.0)
    for rtt in (10.0, 10.0, 10.0, 10.0):
        link.add_ping(rtt)
    assert link.jitter_ms == 0.0  # only the last four samples count
    link.add_ping(None)
    assert link.loss == pytest.approx(1 / 7)
    for _ in range(10):
        link.add_ping(10.0)
    assert link.loss == 0.0  # the lost ping left the window


def test_reliability_counts_transfers_and_bandwidth_uses_only_large_successful_ones() -> None:
    link = LinkEstimator()
    assert link.bandwidth_mbps is None
    link.add_transfer(10_000_000, 4.0, ok=True)  # 20 Mbit/s
    link.add_transfer(10_000_000, 4.0, ok=True)
    link.add_transfer(1_000, 0.5, ok=True)  # latency-bound: ignored for bandwidth
    link.add_transfer(5_000_000, 9.0, ok=False)
    assert link.bandwidth_mbps == pytest.approx(20.0)
    assert link.reliability == pytest.approx(3 / 4)


def test_trend_sees_rtt_going_up_and_down() -> None:
    rising, falling, flat = LinkEstimator(), LinkEstimator(), LinkEstimator()
    for step in range(30):
        rising.add_ping(50.0 + 10 * step)
        falling.add_ping(400.0 - 10 * step)
        flat.add_ping(100.0 + (step % 2))
    assert rising.trend is Trend.DEGRADING
    assert falling.trend is Trend.IMPROVING
    assert flat.trend is Trend.STABLE


def test_bad_measurements_are_refused() -> None:
    link = LinkEstimator()
    with pytest.raises(ValueError, match="rtt_ms"):
        link.add_ping(-1.0)
    with pytest.raises(ValueError, match="transfer"):
        link.add_transfer(-5, 1.0, ok=True)


def test_alerts_for_degradation_silence_and_recovery() -> None:
    monitor = _monitor()
    alerts = []
    for _ in range(30):
        alerts += monitor.observe_ping("peer", 20.0)
    assert alerts == []
    for _ in range(40):
        alerts += monitor.observe_ping("peer", 250.0)
    assert [alert.kind for alert in alerts] == [AlertKind.DEGRADED]
    assert alerts[0].previous is QualityClass.GOOD and alerts[0].current is QualityClass.FAIR
    alerts.clear()
    for _ in range(8):
        alerts += monitor.observe_ping("peer", None)
    assert [alert.kind for alert in alerts] == [AlertKind.UNREACHABLE]
    assert monitor.estimator("peer").quality is QualityClass.CRITICAL
    assert monitor.report("peer").reachable is False
    alerts = monitor.observe_ping("peer", 250.0)
    assert [alert.kind for alert in alerts] == [AlertKind.RECOVERED]
    assert alerts[0].timestamp == FIXED_NOW


def test_summary_is_networkmetrics_rows_with_quality() -> None:
    monitor = _monitor()
    monitor.observe_ping("never-answered", None)
    for _ in range(12):
        monitor.observe_ping("b", 30.0)
        monitor.observe_ping("a", 120.0)
    rows = monitor.summary()
    assert [row.peer_id for row in rows] == ["a", "b"]
    assert rows[0].rtt_ms == pytest.approx(120.0) and rows[0].quality is QualityClass.FAIR
    assert rows[1].quality is QualityClass.GOOD and rows[1].samples == 12
    assert rows[0].model_dump(mode="json")["timestamp"] == "2026-11-28T06:00:00.000Z"


def test_compact_summary_round_trips_and_stays_small() -> None:
    rng = random.Random(3)
    monitor = _monitor()
    peers = [f"12D3KooW{rng.getrandbits(256):064x}"[:52] for _ in range(16)]
    for peer in peers:
        base = rng.uniform(5, 400)
        for _ in range(20):
            monitor.observe_ping(peer, base + rng.uniform(-2, 2) if rng.random() > 0.05 else None)
    rows = monitor.summary()
    blob = encode_link_summary(rows)
    print(f"compact summary of 16 peers: {len(blob)} bytes")
    assert len(blob) < 300
    decoded = decode_link_summary(blob, known_peers=[*peers, "someone-else"])
    assert set(decoded) == set(peers)
    for row in rows:
        link = decoded[row.peer_id]
        assert link.rtt_ms == pytest.approx(row.rtt_ms, abs=0.05)
        assert link.loss == pytest.approx(row.loss, abs=0.0005)
        assert link.quality is row.quality


@pytest.mark.parametrize(
    ("blob", "problem"),
    [
        (b"\xc1", "msgpack"),
        (b"\x92\x02\x90", "version"),
        (b"\x92\x01\x91\x94\xa1x\x01\x01\x01", "row"),
        (b"\x92\x01\x91\x94\xc4\x06abcdef\x01\xcd\x03\xe9\x01", "out of range"),
    ],
)
def test_malformed_summaries_are_refused_with_a_reason(blob: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_link_summary(blob, known_peers=["a"])
