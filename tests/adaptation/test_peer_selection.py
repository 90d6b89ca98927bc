"""Peer ranking, selection strategies, quarantine, probation and re-admission, with an injected clock."""

from __future__ import annotations

import pytest

from agent.adaptation.peer_selection import (
    PeerRoundRecord,
    PeerSelector,
    PeerState,
    RoundOutcome,
    SelectionConfig,
    SelectionEventKind,
    SelectionStrategy,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ok(peer: str, compute: float = 9.0, wait: float = 1.0, **extra: object) -> PeerRoundRecord:
    return PeerRoundRecord(peer_id=peer, compute_seconds=compute, wait_seconds=wait, **extra)


def _broken(peer: str) -> PeerRoundRecord:
    return PeerRoundRecord(peer_id=peer, compute_seconds=9.0, wait_seconds=30.0, outcome=RoundOutcome.TIMEOUT)


def _selector(**config: float) -> tuple[PeerSelector, FakeClock]:
    clock = FakeClock()
    return PeerSelector(SelectionConfig(**config), clock=clock), clock


def test_ranking_by_useful_time_with_penalties_for_retries_and_divergence() -> None:
    selector, _ = _selector()
    for _ in range(10):
        selector.record(_ok("fast", 9.0, 1.0))
        selector.record(_ok("waits", 5.0, 5.0))
        selector.record(_ok("retries", 9.0, 1.0, retries=2))
        selector.record(_ok("divergent", 9.0, 1.0, update_distance=3.0))
    ranking = selector.ranking()
    assert [rank.peer_id for rank in ranking] == ["fast", "retries", "waits", "divergent"]
    assert ranking[0].score == pytest.approx(0.9, abs=0.01)
    assert ranking[1].score == pytest.approx(0.9 * 0.8**2, abs=0.01)
    assert ranking[3].score == pytest.approx(0.3, abs=0.01)
    assert selector.rank("never-seen").score == SelectionConfig().prior_score


def test_strategies() -> None:
    selector, _ = _selector()
    scores = {"a": (9.0, 1.0), "b": (7.0, 3.0), "c": (5.0, 5.0), "d": (1.0, 9.0)}
    for _ in range(10):
        for peer, (compute, wait) in scores.items():
            selector.record(_ok(peer, compute, wait))
    peers = ["d", "c", "b", "a"]
    everyone = selector.select(peers, SelectionStrategy.ALL_AVAILABLE)
    assert everyone.peer_ids == ("a", "b", "c", "d") and everyone.excluded == ()
    assert selector.select(peers, SelectionStrategy.QUALITY_THRESHOLD, threshold=0.6).peer_ids == ("a", "b")
    top = selector.select(peers, SelectionStrategy.TOP_N, top_n=3)
    assert top.peer_ids == ("a", "b", "c") and top.excluded[0][0] == "d"
    adaptive = selector.select(peers, SelectionStrategy.ADAPTIVE_THRESHOLD)
    assert adaptive.threshold == pytest.approx(0.5 * 0.6, abs=0.01)  # half the median score
    assert adaptive.peer_ids == ("a", "b", "c")
    assert "below" in adaptive.excluded[0][1]
    filled = selector.select(peers, SelectionStrategy.QUALITY_THRESHOLD, threshold=0.95, min_peers=2)
    assert filled.peer_ids == ("a", "b")  # nobody reaches 0.95: the best two still make a group
    with pytest.raises(ValueError, match="top_n"):
        selector.select(peers, SelectionStrategy.TOP_N)


def test_adaptive_threshold_keeps_a_uniformly_slow_swarm() -> None:
    selector, _ = _selector()
    for _ in range(10):
        for peer in ("a", "b", "c"):
            selector.record(_ok(peer, 2.0, 8.0))
    assert selector.select(["a", "b", "c"], SelectionStrategy.ADAPTIVE_THRESHOLD).peer_ids == ("a", "b", "c")


def test_quarantine_probation_and_readmission() -> None:
    selector, clock = _selector(cooldown_s=60.0, probation_rounds=3, probation_weight=0.1)
    events = []
    for _ in range(5):
        events += selector.record(_ok("flaky"))
        selector.record(_ok("steady"))
    for _ in range(2):
        events += selector.record(_broken("flaky"))
    assert events == []  # two broken rounds of ten: not yet
    events += selector.record(_broken("flaky"))
    assert [event.kind for event in events] == [SelectionEventKind.QUARANTINED]
    assert selector.rank("flaky").state is PeerState.QUARANTINED
    selection = selector.select(["flaky", "steady"])
    assert selection.peer_ids == ("steady",) and "quarantined" in selection.excluded[0][1]

    clock.now += 59.0
    assert selector.tick() == [] and selector.rank("flaky").state is PeerState.QUARANTINED
    clock.now += 2.0
    assert [event.kind for event in selector.tick()] == [SelectionEventKind.PROBATION]
    on_probation = selector.select(["flaky", "steady"], SelectionStrategy.QUALITY_THRESHOLD, threshold=0.8)
    flaky = next(peer for peer in on_probation.peers if peer.peer_id == "flaky")
    assert flaky.on_probation and flaky.weight == 0.1  # low-stakes rounds, whatever its score

    events = [event for _ in range(3) for event in selector.record(_ok("flaky"))]
    assert [event.kind for event in events] == [SelectionEventKind.READMITTED]
    assert selector.rank("flaky").state is PeerState.ACTIVE
    assert selector.select(["flaky"]).peers[0].weight == 1.0
    assert [record.strike for record in selector.history] == [1]


def test_breaking_probation_doubles_the_cooldown_up_to_a_cap_and_nobody_is_shut_out_for_good() -> None:
    selector, clock = _selector(
        cooldown_s=60.0, max_cooldown_s=300.0, quarantine_breaks=1, forgive_after_s=1e9
    )
    cooldowns = []
    for _ in range(6):
        selector.record(_broken("bad"))  # quarantined (first time) or back from probation and broke again
        record = selector.history[-1]
        cooldowns.append(record.until_s - record.start_s)
        clock.now = record.until_s
        assert [event.kind for event in selector.tick()] == [SelectionEventKind.PROBATION]
    assert cooldowns == [60.0, 120.0, 240.0, 300.0, 300.0, 300.0]
    assert selector.rank("bad").state is PeerState.PROBATION  # it always gets another chance


def test_strikes_fade_after_long_good_conduct() -> None:
    selector, clock = _selector(
        cooldown_s=60.0, quarantine_breaks=1, probation_rounds=1, forgive_after_s=600.0
    )
    selector.record(_broken("peer"))
    clock.now += 60.0
    selector.record(_ok("peer"))  # probation round passed: re-admitted
    clock.now += 1300.0  # two forgiveness periods of good conduct
    selector.record(_broken("peer"))
    assert [record.strike for record in selector.history] == [1, 1]


def test_bad_records_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        PeerRoundRecord(peer_id="p", compute_seconds=-1.0, wait_seconds=0.0)
    with pytest.raises(ValueError, match="nobody may be shut out"):
        SelectionConfig(max_cooldown_s=float("inf"))
