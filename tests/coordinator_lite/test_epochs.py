"""coordinator_lite.epochs + state without a chain: closing, extending, restart, exactness, CSV history."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pytest
from eth_account import Account

from agent.chain.merkle import RewardTree, verify_proof
from agent.protocol.bindings import NodeBinding, SignedNodeBinding, sign_node_binding
from agent.protocol.reports import (
    OFFCHAIN_DOMAIN,
    GroupReceipt,
    RoundReport,
    build_group_receipt,
    sign_round_report,
)
from coordinator_lite.epochs import EpochCloser, EpochSettings
from coordinator_lite.rewards import Strategy
from coordinator_lite.state import CoordinatorState, EpochStatus

RUN = "epochs-test"
T0 = 1_795_000_000
PEERS = [f"12D3KooWPeer{i}" for i in range(4)]
WALLETS = [Account.from_key(bytes([i + 1]) * 32) for i in range(4)]
POOL = 10**18 + 7  # an odd pool so that rounding leaves something to carry


@dataclass
class ListSource:
    """An EvidenceSource over lists (the DHT in production)."""

    bindings: list[SignedNodeBinding] = field(default_factory=list)
    receipts: list[GroupReceipt] = field(default_factory=list)

    def read_bindings(self) -> list[SignedNodeBinding]:
        return list(self.bindings)

    def read_receipts(self, since: float | None, until: float) -> list[GroupReceipt]:
        return list(self.receipts)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def binding(i: int) -> SignedNodeBinding:
    record = NodeBinding(run_id=RUN, peer_id=PEERS[i], wallet=WALLETS[i].address, device="cpu", timestamp=T0)
    return sign_node_binding(WALLETS[i], record, OFFCHAIN_DOMAIN)


def receipt(members: list[int], group: str, ts: int, compute_ms: int = 2000) -> GroupReceipt:
    reports = [
        sign_round_report(
            WALLETS[i],
            RoundReport(
                run_id=RUN,
                round=1,
                group_id=group,
                members=tuple(PEERS[m] for m in members),
                peer_id=PEERS[i],
                samples=1000,
                compute_ms=compute_ms,
                timestamp=ts,
            ),
            OFFCHAIN_DOMAIN,
        )
        for i in members
    ]
    return build_group_receipt(1, reports)


def make_closer(tmp_path, source, clock, strategy=Strategy.PROPORTIONAL) -> EpochCloser:
    state = CoordinatorState(tmp_path / "state.sqlite", RUN)
    settings = EpochSettings(run_id=RUN, epoch_length_s=60, pool_wei_per_epoch=POOL, strategy=strategy)
    return EpochCloser(state, settings, OFFCHAIN_DOMAIN, source, clock=clock)


def test_epochs_close_pay_the_pool_exactly_and_survive_a_restart(tmp_path):
    source = ListSource(bindings=[binding(i) for i in range(4)])
    clock = Clock(T0)
    closer = make_closer(tmp_path, source, clock)
    assert closer.step() is None  # epoch 0 opened, not due yet

    # epoch 0: peers 0+1 and 2+3 average; peer 3 spends twice the compute
    source.receipts = [receipt([0, 1], "a0", T0 + 10), receipt([2, 3], "a1", T0 + 20)]
    source.receipts.append(receipt([2, 3], "a2", T0 + 30, compute_ms=4000))
    clock.now = T0 + 61
    first = closer.step()
    assert first is not None and first.epoch == 0 and first.status is EpochStatus.CLOSED
    records = {r["peer_id"]: r for r in closer.state.records(0)}
    assert set(records) == set(PEERS)
    assert sum(r["reward_wei"] for r in records.values()) + first.carried_out_wei == POOL
    assert records[PEERS[2]]["reward_wei"] > records[PEERS[0]]["reward_wei"]
    cumulative0 = closer.state.cumulative(0)
    tree = RewardTree.build(cumulative0)
    assert tree.root == first.root and first.total_allocated == tree.total
    assert verify_proof(
        first.root, WALLETS[0].address, tree.amount(WALLETS[0].address), tree.proof(WALLETS[0].address)
    )

    # restart: a new process opens the same state file; the same receipts are still in the DHT
    closer.state.close()
    clock.now = T0 + 100
    restarted = make_closer(tmp_path, source, clock)
    restarted.resume()
    assert restarted.step() is None  # epoch 1 is not due until T0 + 61 + 60
    source.receipts.append(receipt([0, 1], "b0", T0 + 100))
    clock.now = T0 + 122
    second = restarted.step()
    assert second is not None and second.epoch == 1
    # only the new group counted: the old receipts were replays
    assert {r["peer_id"]: r["rounds_accepted"] for r in restarted.state.records(1)} == {
        PEERS[0]: 1,
        PEERS[1]: 1,
    }
    cumulative1 = restarted.state.cumulative(1)
    paid1 = sum(r["reward_wei"] for r in restarted.state.records(1))
    assert paid1 + second.carried_out_wei == POOL + first.carried_out_wei
    assert sum(cumulative1.values()) == sum(cumulative0.values()) + paid1
    assert cumulative1[WALLETS[3].address] == cumulative0[WALLETS[3].address]  # kept from epoch 0
    assert second.total_allocated == sum(cumulative1.values())


def test_an_epoch_without_rounds_is_extended_and_its_pool_grows(tmp_path):
    source = ListSource(bindings=[binding(i) for i in range(2)])
    clock = Clock(T0)
    closer = make_closer(tmp_path, source, clock)
    closer.step()
    clock.now = T0 + 61
    assert closer.step() is None
    row = closer.state.open_epoch(clock.now, POOL)
    assert row.epoch == 0 and row.ticks == 2 and row.pool_wei == 2 * POOL
    source.receipts = [receipt([0, 1], "c0", T0 + 90)]
    clock.now = T0 + 121
    closed = closer.step()
    assert closed is not None and closed.epoch == 0
    assert sum(r["reward_wei"] for r in closer.state.records(0)) + closed.carried_out_wei == 2 * POOL


def test_a_crash_inside_the_commit_writes_nothing(tmp_path, monkeypatch):
    source = ListSource(bindings=[binding(i) for i in range(2)], receipts=[receipt([0, 1], "d0", T0 + 5)])
    clock = Clock(T0)
    closer = make_closer(tmp_path, source, clock)
    closer.step()
    clock.now = T0 + 61

    import coordinator_lite.state as state_module

    real = state_module.encode_signed_report
    monkeypatch.setattr(
        state_module, "encode_signed_report", lambda _: (_ for _ in ()).throw(OSError("disk"))
    )
    lone = build_group_receipt(1, [receipt([0, 1], "ff", T0 + 6).reports[0]])  # unconfirmed: stays pending
    source.receipts.append(lone)
    with pytest.raises(OSError):
        closer.step()
    assert closer.state.epoch(0).status is EpochStatus.OPEN
    assert closer.state.records(0) == [] and closer.state.cumulative(0) == {}
    assert closer.state.counted(PEERS[0], "d0") is None
    monkeypatch.setattr(state_module, "encode_signed_report", real)
    closed = closer.step()
    assert closed is not None and len(closer.state.records(0)) == 2


def test_history_export_and_agents(tmp_path):
    source = ListSource(bindings=[binding(i) for i in range(2)], receipts=[receipt([0, 1], "e0", T0 + 5)])
    clock = Clock(T0)
    closer = make_closer(tmp_path, source, clock, strategy=Strategy.TIERED)
    closer.step()
    clock.now = T0 + 61
    closer.step()
    out = io.StringIO()
    assert closer.state.export_history_csv(out) == 2
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("epoch,closed_at,peer_id,wallet") and "tiered" in lines[1]
    agents = closer.state.agents()
    assert [a["peer_id"] for a in agents] == PEERS[:2] and all(a["rounds_accepted"] == 1 for a in agents)


def test_a_state_file_of_another_run_is_refused(tmp_path):
    CoordinatorState(tmp_path / "state.sqlite", RUN).close()
    with pytest.raises(ValueError, match="belongs to run"):
        CoordinatorState(tmp_path / "state.sqlite", "another-run")
