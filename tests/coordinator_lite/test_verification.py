"""coordinator_lite.verification: forged, replayed, duplicate, out-of-run, unconfirmed reports; outliers."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from eth_account import Account

from agent.protocol.bindings import NodeBinding, sign_node_binding
from agent.protocol.reports import (
    ReportDomain,
    RoundReport,
    build_group_receipt,
    report_digest,
    sign_round_report,
)
from coordinator_lite.verification import (
    BindingBook,
    CountedMark,
    OutlierKind,
    RejectReason,
    VerificationPolicy,
    verify_evidence,
)

RUN = "mnist-demo"
DOMAIN = ReportDomain(chain_id=31337, verifying_contract="0x5FbDB2315678afecb367f032d93F642f64180aa3")
PEERS = [f"12D3KooWPeer{i}" for i in range(6)]
WALLETS = [Account.from_key(bytes([i + 1]) * 32) for i in range(6)]
NOW = 1_795_000_000


def book(benchmark: int = 0) -> BindingBook:
    bindings = BindingBook(RUN, DOMAIN)
    for peer, wallet in zip(PEERS, WALLETS, strict=True):
        binding = NodeBinding(
            run_id=RUN,
            peer_id=peer,
            wallet=wallet.address,
            device="cpu",
            benchmark_samples_per_s=benchmark,
            timestamp=NOW,
        )
        bindings.add(sign_node_binding(wallet, binding, DOMAIN))
    return bindings


def report(member: int, members: list[int], group: str = "aa" * 8, signer=None, **changes):
    fields = dict(
        run_id=RUN,
        round=5,
        group_id=group,
        members=tuple(PEERS[i] for i in members),
        peer_id=PEERS[member],
        samples=640,
        compute_ms=1000,
        bytes_sent=100_000,
        bytes_received=100_000,
        timestamp=NOW - 10,
    )
    fields.update(changes)
    return sign_round_report(signer or WALLETS[member], RoundReport(**fields), DOMAIN)


def group(members: list[int], group_id: str = "aa" * 8, **changes):
    return build_group_receipt(5, [report(i, members, group_id, **changes) for i in members])


def verify(receipts, bindings=None, **kwargs):
    return verify_evidence(RUN, DOMAIN, receipts, (bindings or book()).peers, now=NOW, **kwargs)


def reasons(result) -> dict[str, RejectReason]:
    return {rejection.peer_id: rejection.reason for rejection in result.rejections}


def test_a_confirmed_group_counts_every_member_once_even_when_published_by_each():
    receipt = group([0, 1, 2])
    result = verify([receipt, receipt, receipt])
    assert sorted(a.peer_id for a in result.accepted) == PEERS[:3]
    assert result.rejections == [] and result.pending == [] and result.missed == []
    assert all(a.wallet == WALLETS[PEERS.index(a.peer_id)].address for a in result.accepted)


def test_one_report_receipts_of_the_same_group_are_merged():
    singles = [build_group_receipt(5, [report(i, [0, 1])]) for i in (0, 1)]
    result = verify(singles)
    assert sorted(a.peer_id for a in result.accepted) == PEERS[:2]


def test_a_lone_agent_cannot_invent_rounds():
    # peer 0 claims a group with peers 1 and 2, who never signed anything
    alone = build_group_receipt(5, [report(0, [0, 1, 2])])
    result = verify([alone])
    assert result.accepted == [] and [p.report.peer_id for p in result.pending] == [PEERS[0]]
    # once the wait is over, the claim is rejected as unconfirmed
    later = verify_evidence(RUN, DOMAIN, [alone], book().peers, now=NOW + 7200)
    assert reasons(later) == {PEERS[0]: RejectReason.UNCONFIRMED}
    # signing the other members' reports with its own wallet does not help: they are bound to other wallets
    fakes = [report(i, [0, 1, 2], signer=WALLETS[0]) for i in (1, 2)]
    result = verify([build_group_receipt(5, [report(0, [0, 1, 2]), *fakes])])
    assert result.accepted == []
    assert reasons(result) == {PEERS[1]: RejectReason.FORGED, PEERS[2]: RejectReason.FORGED}


def test_a_lone_agent_cannot_bind_two_peer_ids_to_one_wallet():
    bindings = BindingBook(RUN, DOMAIN)
    signed = [
        sign_node_binding(
            WALLETS[0],
            NodeBinding(run_id=RUN, peer_id=peer, wallet=WALLETS[0].address, device="cpu", timestamp=NOW),
            DOMAIN,
        )
        for peer in PEERS[:2]
    ]
    refused = bindings.add_all(signed)
    assert len(refused) == 1 and "already bound to peer" in refused[0]
    receipt = build_group_receipt(5, [report(i, [0, 1], signer=WALLETS[0]) for i in (0, 1)])
    result = verify([receipt], bindings=bindings)
    assert result.accepted == [] and reasons(result) == {PEERS[1]: RejectReason.UNBOUND}


def test_min_group_size_is_enforced():
    result = verify([group([0, 1])], policy=VerificationPolicy(min_group_size=3))
    assert result.accepted == [] and len(result.pending) == 2
    assert len(verify([group([0, 1, 2])], policy=VerificationPolicy(min_group_size=3)).accepted) == 3


def test_a_member_who_signed_another_member_list_does_not_confirm():
    # peer 2 signed a group "with peer 0", but peer 0's report lists other members: no common signed list
    receipts = [build_group_receipt(5, [report(0, [0, 1])]), build_group_receipt(5, [report(2, [0, 2])])]
    result = verify(receipts)
    assert result.accepted == [] and len(result.pending) == 2


def test_forged_and_altered_reports_are_rejected_and_do_not_spoil_the_genuine_copy():
    genuine = report(1, [0, 1])
    altered = genuine.model_copy(update={"report": genuine.report.model_copy(update={"samples": 64_000})})
    bad_signature = genuine.model_copy(update={"signature": b"\x01" * 65})
    receipt = build_group_receipt(5, [report(0, [0, 1]), genuine])
    result = verify([receipt, build_group_receipt(5, [bad_signature]), build_group_receipt(5, [altered])])
    assert sorted(a.peer_id for a in result.accepted) == PEERS[:2]
    counted = {a.peer_id: a.samples for a in result.accepted}
    assert counted[PEERS[1]] == 640
    # the altered copy of peer 1 is a second, different report for the same group: rejected, never counted
    assert [r.reason for r in result.rejections] == [RejectReason.FORGED]


def test_reports_of_unbound_peers_or_other_runs_are_rejected():
    stranger = Account.from_key(b"\x77" * 32)
    unbound = sign_round_report(
        stranger,
        RoundReport(
            run_id=RUN,
            round=5,
            group_id="cc" * 8,
            members=(PEERS[0], "12D3KooWStranger"),
            peer_id="12D3KooWStranger",
            samples=1,
            compute_ms=1,
            timestamp=NOW,
        ),
        DOMAIN,
    )
    other_run = sign_round_report(
        WALLETS[0], report(0, [0, 1]).report.model_copy(update={"run_id": "other-run"}), DOMAIN
    )
    result = verify([build_group_receipt(5, [unbound]), build_group_receipt(5, [other_run])])
    assert reasons(result) == {"12D3KooWStranger": RejectReason.UNBOUND, PEERS[0]: RejectReason.OUT_OF_RUN}
    signed_elsewhere = sign_round_report(
        WALLETS[0], report(0, [0, 1]).report, DOMAIN.model_copy(update={"chain_id": 10143})
    )
    assert reasons(verify([build_group_receipt(5, [signed_elsewhere])])) == {PEERS[0]: RejectReason.FORGED}


def test_reports_before_the_run_or_from_the_future_are_rejected():
    early = group([0, 1], timestamp=NOW - 10 * 86400)
    result = verify([early], policy=VerificationPolicy(run_start=NOW - 86400))
    assert set(reasons(result).values()) == {RejectReason.OUT_OF_RUN}
    future = group([0, 1], group_id="dd" * 8, timestamp=NOW + 3600)
    assert set(reasons(verify([future])).values()) == {RejectReason.FROM_THE_FUTURE}


@dataclass
class Remembered:
    """What an earlier epoch counted (the SQLite state implements the same protocol)."""

    marks: dict[tuple[str, str], CountedMark] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)

    def counted(self, peer_id: str, group_id: str) -> CountedMark | None:
        return self.marks.get((peer_id, group_id))

    def counted_in_group(self, group_id: str) -> list[CountedMark]:
        return [mark for (_, g), mark in self.marks.items() if g == group_id]

    def last_timestamp(self, peer_id: str) -> int | None:
        return self.last.get(peer_id)

    def remember(self, result) -> None:
        for a in result.accepted:
            self.marks[(a.peer_id, a.group_id)] = CountedMark(a.peer_id, a.digest, a.members_hash, a.wallet)
            self.last[a.peer_id] = max(self.last.get(a.peer_id, 0), a.timestamp)


def test_replayed_reports_count_once_and_changed_resubmissions_are_duplicates():
    memory = Remembered()
    receipt = group([0, 1])
    first = verify([receipt], counted=memory)
    memory.remember(first)
    assert len(first.accepted) == 2
    again = verify([receipt], counted=memory)
    assert again.accepted == [] and set(reasons(again).values()) == {RejectReason.REPLAYED}
    inflated = group([0, 1], compute_ms=9000)
    changed = verify([inflated], counted=memory)
    assert changed.accepted == [] and set(reasons(changed).values()) == {RejectReason.DUPLICATE}


def test_a_late_member_report_is_confirmed_by_reports_counted_earlier():
    memory = Remembered()
    first = verify([build_group_receipt(5, [report(0, [0, 1, 2]), report(1, [0, 1, 2])])], counted=memory)
    memory.remember(first)
    assert [m.peer_id for m in first.missed] == [PEERS[2]]
    late = verify([build_group_receipt(5, [report(2, [0, 1, 2])])], counted=memory)
    assert [a.peer_id for a in late.accepted] == [PEERS[2]]


def test_two_different_reports_of_one_peer_for_one_group_are_both_rejected():
    one = report(0, [0, 1])
    two = report(0, [0, 1], samples=7)
    result = verify([build_group_receipt(5, [one, report(1, [0, 1])]), build_group_receipt(5, [two])])
    assert [a.peer_id for a in result.accepted] == []  # peer 1 alone cannot confirm
    assert [r.reason for r in result.rejections] == [RejectReason.DUPLICATE] * 2


def test_outliers_are_flagged_and_clipped():
    bindings = book(benchmark=1000)
    receipt = build_group_receipt(
        5,
        [
            report(0, [0, 1, 2]),  # 640 samples/s: plausible
            report(1, [0, 1, 2], samples=50_000),  # 50,000 samples/s on a 1,000 samples/s benchmark
            report(2, [0, 1, 2], samples=10, compute_ms=60_000),  # 0.17 samples/s: inflated compute time
        ],
    )
    result = verify([receipt], bindings=bindings)
    by_peer = {a.peer_id: a for a in result.accepted}
    assert by_peer[PEERS[0]].flags == ()
    assert by_peer[PEERS[1]].flags == (OutlierKind.TOO_FAST,)
    # clipped to 3x the tighter yardstick: the median of the three cpu peers (640/s), not the benchmark
    assert by_peer[PEERS[1]].samples == 1920 and by_peer[PEERS[1]].claimed_samples == 50_000
    assert by_peer[PEERS[2]].flags == (OutlierKind.TOO_SLOW,)
    assert by_peer[PEERS[2]].compute_ms == 30 and by_peer[PEERS[2]].claimed_compute_ms == 60_000


def test_compute_time_beyond_wall_time_is_clipped():
    memory = Remembered(last={PEERS[0]: NOW - 20})
    receipt = build_group_receipt(5, [report(0, [0, 1], compute_ms=600_000), report(1, [0, 1])])
    result = verify([receipt], counted=memory)
    peer0 = next(a for a in result.accepted if a.peer_id == PEERS[0])
    assert OutlierKind.COMPUTE_EXCEEDS_WALL_TIME in peer0.flags
    assert peer0.compute_ms == (10 + 5) * 1000


def test_a_group_whose_bytes_do_not_add_up_is_flagged():
    receipt = build_group_receipt(
        5, [report(0, [0, 1], bytes_sent=10_000_000), report(1, [0, 1], bytes_received=100_000)]
    )
    result = verify([receipt])
    assert {flag.kind for flag in result.outliers} == {OutlierKind.BYTES_DO_NOT_ADD_UP}
    assert len(verify([group([0, 1])]).outliers) == 0


def test_quality_inputs_are_collected_from_the_group():
    receipt = build_group_receipt(
        5,
        [
            report(0, [0, 1, 2], update_norm_micro=1_000_000, flagged=(PEERS[2],)),
            report(1, [0, 1, 2], update_norm_micro=1_100_000, flagged=(PEERS[2],)),
            report(2, [0, 1, 2], update_norm_micro=90_000_000),
        ],
    )
    by_peer = {a.peer_id: a for a in verify([receipt]).accepted}
    assert by_peer[PEERS[2]].flagged_by == 2 and by_peer[PEERS[0]].flagged_by == 0
    assert by_peer[PEERS[0]].group_median_norm_micro == 1_100_000


def test_a_second_binding_of_a_peer_to_another_wallet_is_refused():
    bindings = book()
    thief = Account.from_key(b"\x55" * 32)
    steal = NodeBinding(run_id=RUN, peer_id=PEERS[0], wallet=thief.address, device="cpu", timestamp=NOW)
    refused = bindings.add_all([sign_node_binding(thief, steal, DOMAIN)])
    assert len(refused) == 1 and "already bound" in refused[0]
    assert bindings.peers[PEERS[0]].wallet == WALLETS[0].address


@pytest.mark.parametrize("count", [60])
def test_verification_of_many_groups_is_fast_enough(count):
    import time

    receipts = [group([i % 6, (i + 1) % 6], group_id=f"{i:04x}" * 4) for i in range(count)]
    started = time.perf_counter()
    result = verify(receipts)
    assert len(result.accepted) == 2 * count
    assert time.perf_counter() - started < 5
    digests = {a.digest for a in result.accepted}
    assert report_digest(receipts[0].reports[0].report, DOMAIN) in digests
