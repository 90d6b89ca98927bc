"""coordinator_lite.scoring: compute time x quality (0.5-1.5) x reliability (0.8-1.2)."""

from __future__ import annotations

import pytest

from coordinator_lite.scoring import reliability, round_quality, score_epoch
from coordinator_lite.verification import AcceptedRound, MissedRound, OutlierKind

T0 = 1_795_000_000


def accepted(peer: str = "p", *, ts: int = T0, compute_ms: int = 1000, **changes) -> AcceptedRound:
    fields = dict(
        peer_id=peer,
        wallet="0x" + "11" * 20,
        round=1,
        group_id="aa",
        group_size=3,
        samples=100,
        compute_ms=compute_ms,
        claimed_samples=100,
        claimed_compute_ms=compute_ms,
        bytes_sent=0,
        bytes_received=0,
        update_norm_micro=0,
        group_median_norm_micro=0,
        flagged_by=0,
        timestamp=ts,
        digest=b"",
        members_hash=b"",
    )
    fields.update(changes)
    return AcceptedRound(**fields)


def test_round_quality_ranges():
    assert round_quality(accepted()) == 1.0  # nothing measured: neutral
    agreeing = accepted(update_norm_micro=1_000_000, group_median_norm_micro=1_000_000)
    assert round_quality(agreeing) == 1.5
    far_off = accepted(update_norm_micro=50_000_000, group_median_norm_micro=1_000_000)
    assert round_quality(far_off) == 0.5
    flagged_by_all = accepted(update_norm_micro=1_000_000, group_median_norm_micro=1_000_000, flagged_by=2)
    assert round_quality(flagged_by_all) == 0.5
    assert round_quality(accepted(flagged_by=1)) == pytest.approx(0.75)
    assert round_quality(agreeing.__class__(**{**agreeing.__dict__, "flags": (OutlierKind.TOO_FAST,)})) == 1.0


def test_reliability_bounds():
    assert reliability(1.0, 1.0) == pytest.approx(1.2)
    assert reliability(0.0, 0.0) == pytest.approx(0.8)
    assert reliability(0.5, 1.0) == pytest.approx(1.1)


def test_score_is_compute_times_quality_times_reliability():
    # steady peer: a round each minute for 10 minutes, all reports arrive
    steady = [accepted("steady", ts=T0 + 60 * i) for i in range(10)]
    # flaky peer: same compute in 2 rounds, and its group confirmed 2 rounds without its report
    flaky = [accepted("flaky", ts=T0 + 60 * i, compute_ms=5000) for i in range(2)]
    missed = [MissedRound("flaky", "bb"), MissedRound("flaky", "cc")]
    cards = {c.peer_id: c for c in score_epoch(steady + flaky, missed, epoch_end=T0 + 600)}
    assert cards["steady"].compute_seconds == cards["flaky"].compute_seconds == 10
    assert cards["steady"].reliability == pytest.approx(1.2)
    assert cards["flaky"].uptime == pytest.approx(0.2) and cards["flaky"].communication_success == 0.5
    assert cards["flaky"].reliability == pytest.approx(0.8 + 0.4 * 0.35)
    assert cards["steady"].score == pytest.approx(10 * 1.0 * 1.2)
    assert cards["steady"].score > cards["flaky"].score
    assert cards["flaky"].rounds_missed == 2 and cards["steady"].rounds_accepted == 10


def test_quality_is_weighted_by_compute_time():
    good = accepted("p", compute_ms=9000, update_norm_micro=10, group_median_norm_micro=10)
    bad = accepted("p", ts=T0 + 1, compute_ms=1000, flagged_by=2)
    (card,) = score_epoch([good, bad], [], epoch_end=T0 + 60)
    assert card.quality == pytest.approx((9 * 1.5 + 1 * 0.5) / 10)


def test_a_thousand_agents_score_split_and_tree_exactly():
    from agent.chain.merkle import RewardTree, verify_proof
    from coordinator_lite.rewards import Strategy, split_rewards

    rounds = [
        accepted(f"peer{i:04d}", ts=T0 + 60 * r, compute_ms=500 + 37 * i, wallet=f"0x{i + 1:040x}")
        for i in range(1000)
        for r in range(3)
    ]
    cards = score_epoch(rounds, [MissedRound("peer0007", "zz")], epoch_end=T0 + 180)
    assert len(cards) == 1000
    pool = 123 * 10**18 + 456
    for strategy in Strategy:
        split = split_rewards(cards, pool, strategy)
        assert split.total + split.carried_out == pool and split.carried_out < 2000
    tree = RewardTree.build({card.wallet: split.rewards[card.peer_id] for card in cards})
    wallet = cards[500].wallet
    assert verify_proof(tree.root, wallet, tree.amount(wallet), tree.proof(wallet))
