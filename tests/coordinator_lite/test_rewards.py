"""coordinator_lite.rewards: every strategy pays out exactly the pool to the wei, never more."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator_lite.rewards import Strategy, StrategyOptions, split_rewards
from coordinator_lite.scoring import ScoreCard

ETHER = 10**18


def card(peer: str, score: float, samples: int = 1000, quality: float = 1.0, reliability: float = 1.0):
    return ScoreCard(
        peer_id=peer,
        wallet="0x" + "00" * 20,
        rounds_accepted=1,
        rounds_missed=0,
        compute_seconds=score,
        samples=samples,
        quality=quality,
        reliability=reliability,
        uptime=1.0,
        communication_success=1.0,
        outlier_rounds=0,
        score=score,
    )


cards_strategy = st.lists(
    st.builds(
        card,
        peer=st.text(alphabet="abcdef0123456789", min_size=1, max_size=8),
        score=st.floats(min_value=0, max_value=1e6, allow_nan=False),
        samples=st.integers(min_value=0, max_value=10**9),
        quality=st.floats(min_value=0.5, max_value=1.5),
        reliability=st.floats(min_value=0.8, max_value=1.2),
    ),
    max_size=40,
    unique_by=lambda c: c.peer_id,
)


@settings(max_examples=300, deadline=None)
@given(
    cards=cards_strategy,
    pool=st.integers(min_value=0, max_value=10**30),
    carried=st.integers(min_value=0, max_value=10**6),
    strategy=st.sampled_from(list(Strategy)),
    top_fraction=st.floats(min_value=0.01, max_value=1.0),
    bonus=st.integers(min_value=0, max_value=500),
    guarantee=st.integers(min_value=0, max_value=10_000),
)
def test_totals_equal_the_pool_to_the_wei(cards, pool, carried, strategy, top_fraction, bonus, guarantee):
    options = StrategyOptions(top_fraction=top_fraction, bonus_percent=bonus, guarantee_bps=guarantee)
    split = split_rewards(cards, pool, strategy, carried_in_wei=carried, options=options)
    assert split.total + split.carried_out == pool + carried
    assert split.total <= pool + carried
    assert all(amount > 0 for amount in split.rewards.values())
    assert set(split.rewards) <= {c.peer_id for c in cards}
    eligible = [c for c in cards if split_weight(c, strategy) > 0]
    if eligible and pool + carried >= 10**6 * len(cards):
        # rounding down loses at most one wei per share (two with the guarantee), never more
        assert split.carried_out <= 2 * len(eligible)
    if not eligible:
        assert split.rewards == {} and split.carried_out == pool + carried


def split_weight(c: ScoreCard, strategy: Strategy) -> int:
    value = c.samples * c.quality * c.reliability if strategy is Strategy.PERFORMANCE else c.score
    return int(value * 1_000_000)


@settings(max_examples=200, deadline=None)
@given(cards=cards_strategy, pool=st.integers(min_value=0, max_value=10**24))
def test_proportional_rewards_follow_the_score_order(cards, pool):
    split = split_rewards(cards, pool, Strategy.PROPORTIONAL)
    ordered = sorted(cards, key=lambda c: c.score)
    amounts = [split.rewards.get(c.peer_id, 0) for c in ordered]
    assert amounts == sorted(amounts)


def test_proportional_split_of_a_known_case():
    split = split_rewards([card("a", 1.0), card("b", 2.0)], 10, Strategy.PROPORTIONAL, carried_in_wei=0)
    assert split.rewards == {"a": 3, "b": 6} and split.carried_out == 1
    follow = split_rewards([card("a", 1.0), card("b", 2.0)], 8, Strategy.PROPORTIONAL, carried_in_wei=1)
    assert follow.rewards == {"a": 3, "b": 6} and follow.carried_out == 0


def test_tiered_gives_the_top_contributor_a_bonus():
    cards = [card(p, s) for p, s in zip("abcdefghij", [10, 1, 1, 1, 1, 1, 1, 1, 1, 1], strict=True)]
    plain = split_rewards(cards, 100 * ETHER, Strategy.PROPORTIONAL)
    tiered = split_rewards(cards, 100 * ETHER, Strategy.TIERED, options=StrategyOptions(0.1, 50))
    assert tiered.rewards["a"] > plain.rewards["a"] and tiered.rewards["b"] < plain.rewards["b"]
    # a: 10 * 1.5 = 15 of 15 + 9 = 24 weight units
    assert tiered.rewards["a"] == 100 * ETHER * 15 // 24


def test_minimum_guarantee_lifts_small_contributors():
    cards = [card("big", 1000.0), card("small", 1.0)]
    split = split_rewards(
        cards, 1000, Strategy.MINIMUM_GUARANTEE, options=StrategyOptions(guarantee_bps=2000)
    )
    # 200 wei guaranteed, 100 each; 800 split 1000:1
    assert split.rewards == {"big": 100 + 800 * 1000 // 1001, "small": 100 + 800 // 1001}
    assert split.total + split.carried_out == 1000


def test_performance_rewards_samples_not_time():
    slow = card("slow", score=100.0, samples=1_000)
    fast = card("fast", score=10.0, samples=9_000)
    split = split_rewards([slow, fast], 10_000, Strategy.PERFORMANCE)
    assert split.rewards == {"slow": 1000, "fast": 9000}


def test_nothing_to_reward_carries_the_whole_pool():
    split = split_rewards([card("idle", 0.0)], 5 * ETHER, Strategy.TIERED, carried_in_wei=7)
    assert split.rewards == {} and split.carried_out == 5 * ETHER + 7


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        split_rewards([card("a", float("inf"))], 10, Strategy.PROPORTIONAL)
    with pytest.raises(ValueError):
        split_rewards([], -1, Strategy.PROPORTIONAL)
    with pytest.raises(ValueError):
        StrategyOptions(guarantee_bps=10_001)
