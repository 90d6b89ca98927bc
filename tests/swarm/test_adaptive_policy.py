"""AdaptivePolicy's decisions from synthetic measurements (no processes): groups, cross-cluster rounds,
quarantine by consensus, local work and timeouts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from agent.network.link_stats import CompactLink, PeerLinkReport, QualityClass, Trend
from agent.protocol.config import load_run_config
from agent.swarm.adaptive import AdaptivePolicy, AdaptiveSettings, consensus, quarantine_bits
from agent.swarm.link_monitor import PeerVotes, SwarmLinks
from agent.swarm.policy import RoundResult

PEERS = [f"peer-{i}" for i in range(8)]
REGION = {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2}
BETWEEN = {(0, 1): 100.0, (0, 2): 150.0, (1, 2): 250.0}


def _rtt(i: int, j: int) -> float:
    a, b = sorted((REGION[i], REGION[j]))
    return 10.0 if a == b else BETWEEN[(a, b)]


def regions3_links(votes: dict[str, PeerVotes] | None = None) -> SwarmLinks:
    links = {
        PEERS[i]: {PEERS[j]: CompactLink(_rtt(i, j), 0.0, None) for j in range(8) if j != i} for i in range(8)
    }
    return SwarmLinks(links=links, votes=votes or {peer: PeerVotes() for peer in PEERS}, read_at=0.0)


@dataclass
class FakeMonitor:
    """Stands in for LinkMonitor: a fixed DHT snapshot and fixed links from this agent."""

    links: SwarmLinks
    me: int
    loss: float = 0.0
    rounds: list[tuple] = field(default_factory=list)
    busy_seconds: float = 0.0
    bytes_estimate: int = 0
    pings_sent: int = 0
    publications: int = 0
    alerts: list = field(default_factory=list)

    def snapshot(self) -> SwarmLinks:
        return self.links

    def link_to(self, peer: str) -> PeerLinkReport | None:
        j = PEERS.index(peer)
        return PeerLinkReport(
            peer_id=peer,
            rtt_ms=_rtt(self.me, j),
            jitter_ms=1.0,
            loss=self.loss,
            quality=QualityClass.GOOD,
            score=80.0,
            reliability=1.0,
            trend=Trend.STABLE,
            samples=20,
            reachable=True,
        )

    def observe_round(self, members, seconds, bytes_per_peer, ok) -> None:
        self.rounds.append((tuple(members), seconds, bytes_per_peer, ok))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _policy(me: int, links: SwarmLinks, clock: Clock, **settings) -> AdaptivePolicy:
    config = load_run_config(None, {"training": {"batch_size": 64, "local_steps": 8}}, use_env=False)
    policy = AdaptivePolicy(config, AdaptiveSettings(**settings), dht_time=clock, clock=clock)
    policy.peer_id = PEERS[me]
    policy.monitor = FakeMonitor(links, me)  # type: ignore[assignment]
    return policy


def test_every_agent_reading_the_same_summaries_picks_the_same_regional_groups() -> None:
    clock = Clock()
    links = regions3_links()
    policies = [_policy(i, links, clock) for i in range(8)]
    for policy in policies:
        policy.plan_round(0)  # the first round of a period is the cross-cluster one
    bits = [policy.plan_round(1).group_bits for policy in policies]
    assert len({policy.group_plan.fingerprint for policy in policies}) == 1
    for i in range(8):
        for j in range(8):
            assert (bits[i] == bits[j]) == (REGION[i] == REGION[j]), (i, j, bits)
    assert "" not in bits  # in-cluster rounds never use the global key
    decisions = [d for d in policies[0].decisions if d.kind == "groups"]
    assert decisions and "3 latency cluster(s)" in decisions[0].reason


def test_one_cross_cluster_round_per_period_then_back_to_the_cluster() -> None:
    clock = Clock()
    policy = _policy(0, regions3_links(), clock, cross_cluster_period_s=10.0, replan_period_s=8.0)
    first = policy.plan_round(0)
    assert first.group_bits == "" and "cross-cluster" in first.reason
    second = policy.plan_round(1)
    assert second.group_bits not in ("", None)
    clock.now += 10.0
    assert policy.plan_round(2).group_bits == ""
    assert policy.plan_round(3).group_bits == second.group_bits


def test_a_peer_a_majority_quarantines_averages_alone_and_probation_lowers_the_weight() -> None:
    votes = {peer: PeerVotes(quarantined=(PEERS[7],)) for peer in PEERS[:5]}
    votes |= {peer: PeerVotes() for peer in PEERS[5:]}
    quarantined, probation = consensus(votes)
    assert quarantined == {PEERS[7]} and not probation
    clock = Clock()
    links = regions3_links(votes)
    outcast, other = _policy(7, links, clock), _policy(6, links, clock)
    plan = outcast.plan_round(1)
    assert plan.group_bits == quarantine_bits(outcast.group_plan)
    assert "quarantined" in plan.reason
    other.plan_round(0)
    assert PEERS[7] not in other.group_plan.assignments
    # Peer 6 lost its region mate: its cluster of one was folded into the nearest one (region 1).
    assert other.group_plan.cluster_of(PEERS[6]) == other.group_plan.cluster_of(PEERS[0])
    assert any(d.kind == "quarantine" for d in other.decisions)

    on_probation = {peer: PeerVotes(probation=(PEERS[7],)) for peer in PEERS[:6]}
    policy = _policy(7, regions3_links(on_probation), clock)
    assert policy.plan_round(1).weight_scale == pytest.approx(0.1)
    # A minority vote changes nothing.
    assert consensus(
        {PEERS[0]: PeerVotes(quarantined=(PEERS[7],))} | {p: PeerVotes() for p in PEERS[1:]}
    ) == (
        frozenset(),
        frozenset(),
    )


def _gathered(prev_of_7: list) -> dict:
    payload = {peer: {"prev": [1, 1.0], "compute_s": 2.0, "period_s": 3.0} for peer in PEERS[:3]}
    payload[PEERS[7]] = {"prev": prev_of_7, "compute_s": 2.0, "period_s": 3.0}
    return payload


def test_a_member_that_keeps_breaking_rounds_is_voted_into_quarantine_and_comes_back_on_probation() -> None:
    clock = Clock()
    policy = _policy(0, regions3_links(), clock)
    members = (PEERS[0], PEERS[1], PEERS[2], PEERS[7])
    for index in range(2):
        policy.plan_round(index)
        policy.on_round_finished(RoundResult(True, members, 1.0, 2.0, 128, gathered=_gathered([0, 30.0])))
    assert policy.votes().quarantined == ()
    policy.on_round_finished(RoundResult(True, members, 1.0, 2.0, 128, gathered=_gathered([1, 40.0])))
    assert policy.votes().quarantined == (PEERS[7],)  # a straggler (40 s vs 1 s) breaks the round too
    assert policy.selector.history[0].peer_id == PEERS[7]
    clock.now += policy.settings.selection.cooldown_s + 1
    policy.plan_round(5)
    assert policy.votes() == PeerVotes(quarantined=(), probation=(PEERS[7],))


def test_high_latency_and_slow_rounds_raise_local_work_within_bounds_and_stretch_the_timeout() -> None:
    clock = Clock()
    policy = _policy(7, regions3_links(), clock)
    policy.monitor.loss = 0.05  # type: ignore[union-attr]
    start = policy.local_work.plan
    for index in range(40):
        policy.plan_round(index)
        # 8 steps x 64 samples computed in 1 s; the round took 12 s (a poor link), and the group
        # could wait (its members start rounds every 60 s).
        gathered = {PEERS[6]: {"prev": [1, 12.0], "compute_s": 1.0, "period_s": 60.0}}
        policy.on_round_finished(RoundResult(True, (PEERS[6], PEERS[7]), 12.0, 1.0, 512, gathered=gathered))
    after = policy.local_work.plan
    assert after.samples_per_round > start.samples_per_round
    assert 16 <= after.batch_size <= 256 and 1 <= after.local_steps <= 64
    grew = [d for d in policy.decisions if d.kind == "local_work"]
    assert grew and "more_work" in grew[0].reason and "RTT 10 ms, loss 5.0%" in grew[0].reason
    assert policy.plan_round(41).matchmaking_timeout >= 12.0  # follows the 12 s rounds
    assert policy.monitor.rounds[-1][2] > 0  # passive feed: bytes per peer from the model size
    assert 0 < policy.decision_seconds() < 1.0
    report = policy.report()
    assert report["decisions_total"] == len(policy.decisions)


def test_a_new_group_plan_is_adopted_only_when_two_replans_in_a_row_agree() -> None:
    clock = Clock()
    policy = _policy(0, regions3_links(), clock, replan_period_s=8.0)
    policy.plan_round(0)
    first = policy.group_plan.fingerprint
    # Region 2 and 3 now look like one region (e.g. a noisy summary): the plan would merge them.
    merged = {src: dict(row) for src, row in regions3_links().links.items()}
    for i in (3, 4, 5):
        for j in (6, 7):
            merged[PEERS[i]][PEERS[j]] = merged[PEERS[j]][PEERS[i]] = CompactLink(10.0, 0.0, None)
    policy.monitor.links = SwarmLinks(links=merged, votes=regions3_links().votes)  # type: ignore[union-attr]
    clock.now += 8.0
    policy.plan_round(1)
    assert policy.group_plan.fingerprint == first  # one replan is not enough
    clock.now += 8.0
    policy.plan_round(2)
    assert policy.group_plan.fingerprint != first
    assert len(policy.group_plan.clusters) == 2
