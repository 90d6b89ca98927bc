"""coordinator_lite.onchain_check: the comparison rules on hand-made ledgers; the reader on a real anvil."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from swarm_page_fixtures import RUN, WALLETS, closed_state, more_rounds, post_on_chain

from agent.chain.anvil import AnvilProcess, find_anvil
from agent.chain.attestation import run_id_hash
from agent.chain.merkle import RewardTree
from coordinator_lite.onchain_check import (
    REORG_MARGIN_BLOCKS,
    ChainPosition,
    LocalEpoch,
    OnchainContribution,
    OnchainLedger,
    OnchainRegistration,
    OnchainRoot,
    Verdict,
    compare_ledgers,
    local_epochs,
)

A, B, C = (w.address for w in WALLETS)
ROOT = "0x" + "ab" * 32


def at(block: int, index: int = 0) -> ChainPosition:
    return ChainPosition(block=block, tx_hash=f"0x{block:064x}", log_index=index)


def local(epoch: int = 0, posted: bool = True, **contributions: tuple[int, int, int, int]) -> LocalEpoch:
    wallets = {dict(A=A, B=B, C=C)[name]: numbers for name, numbers in contributions.items()}
    return LocalEpoch(epoch, posted, ROOT, 100, wallets, {w: [f"peer-{w[-4:]}"] for w in wallets})


def chain_record(wallet: str, numbers: tuple[int, int, int, int], block: int = 5, epoch: int = 0):
    return OnchainContribution(epoch, wallet, *numbers, at=at(block))


def ledger(**parts) -> OnchainLedger:
    registered = [OnchainRegistration(w, f"peer-{w[-4:]}", at(2)) for w in (A, B, C)]
    return OnchainLedger(from_block=1, to_block=20, epoch_count=parts.pop("epoch_count", 1), **{
        "registrations": registered, **parts
    })  # fmt: skip


def verdicts(report) -> dict[str, Verdict]:
    return {check.wallet: check.verdict for check in report.records}


def test_identical_records_and_root_match() -> None:
    report = compare_ledgers(
        [local(A=(3, 2, 1280, 500_000), B=(6, 2, 1280, 500_000))],
        ledger(
            contributions=[chain_record(A, (3, 2, 1280, 500_000)), chain_record(B, (6, 2, 1280, 500_000))],
            roots=[OnchainRoot(0, ROOT, 100, at(6))],
        ),
    )
    assert report.differences == 0 and report.note == ""
    assert verdicts(report) == {A: Verdict.MATCH, B: Verdict.MATCH}
    assert report.roots[0].verdict is Verdict.MATCH


def test_a_different_field_is_named_and_counted() -> None:
    report = compare_ledgers(
        [local(A=(3, 2, 1280, 500_000), B=(6, 2, 1280, 500_000))],
        ledger(
            contributions=[chain_record(A, (3, 2, 1280, 500_000)), chain_record(B, (6, 9, 1280, 500_001))],
            roots=[OnchainRoot(0, ROOT, 100, at(6))],
        ),
    )
    record = next(r for r in report.records if r.wallet == B)
    assert record.verdict is Verdict.MISMATCH and record.differing_fields == ["rounds_accepted", "score"]
    assert record.coordinator.rounds_accepted == 2 and record.onchain.rounds_accepted == 9
    assert report.differences == 1


def test_root_mismatch_missing_unexpected_and_repeated_records() -> None:
    report = compare_ledgers(
        [local(A=(3, 2, 1280, 1), B=(6, 2, 1280, 1))],
        ledger(
            contributions=[
                chain_record(A, (1, 1, 640, 1)),
                chain_record(A, (2, 1, 640, 0)),  # a second batch: the sum is what counts
                chain_record(C, (1, 1, 1, 1)),  # nobody decided this one
            ],
            roots=[OnchainRoot(0, "0x" + "cd" * 32, 101, at(6)), OnchainRoot(1, ROOT, 200, at(9))],
            epoch_count=2,
        ),
    )
    assert verdicts(report) == {A: Verdict.MATCH, B: Verdict.MISSING_ON_CHAIN, C: Verdict.UNEXPECTED_ON_CHAIN}
    assert "recorded 2 times" in next(r for r in report.records if r.wallet == A).note
    root0, root1 = report.roots
    assert root0.verdict is Verdict.MISMATCH and root0.differing_fields == ["root", "total_allocated_wei"]
    assert root1.verdict is Verdict.UNEXPECTED_ON_CHAIN
    assert report.differences == 4


def test_pending_epochs_and_unregistered_wallets_are_not_differences() -> None:
    report = compare_ledgers(
        [local(0, True, A=(3, 2, 1280, 1), B=(6, 2, 1280, 1)), local(1, False, A=(1, 1, 640, 1))],
        ledger(
            contributions=[chain_record(A, (3, 2, 1280, 1))],
            roots=[OnchainRoot(0, ROOT, 100, at(6))],
            registrations=[OnchainRegistration(A, "peer", at(2)), OnchainRegistration(B, "peer", at(7))],
        ),
    )
    by_key = {(r.epoch, r.wallet): r.verdict for r in report.records}
    assert by_key == {(0, A): Verdict.MATCH, (0, B): Verdict.NOT_POSTED, (1, A): Verdict.PENDING}
    assert [r.verdict for r in report.roots] == [Verdict.MATCH, Verdict.PENDING]
    assert report.differences == 0


def test_roots_posted_before_the_first_block_read_are_reported() -> None:
    report = compare_ledgers([], ledger(epoch_count=3))
    assert report.differences == 1 and "3 closed epochs" in report.note and "--deployment-file" in report.note


def test_local_epochs_sum_records_per_wallet_as_posted(tmp_path) -> None:
    state = closed_state(tmp_path)
    (epoch,) = local_epochs(state)
    assert epoch.posted is False and epoch.root == state.epoch(0).root.lower()
    assert epoch.contributions[A][1:3] == (2, 1280)  # two rounds of 640 samples
    assert [epoch.contributions[w][0] for w in (A, B, C)] == [2, 4, 6]  # 1, 2, 3 s per round
    assert epoch.total_allocated_wei == sum(state.cumulative(0).values())


@pytest.fixture
def anvil() -> Iterator[AnvilProcess]:
    if find_anvil() is None:
        pytest.skip("anvil is not installed: run scripts/setup (npm ci installs @foundry-rs/anvil)")
    with AnvilProcess(accounts=3) as chain:
        yield chain


def test_reader_finds_a_forged_record_and_reads_only_new_blocks_later(tmp_path, anvil) -> None:
    state = closed_state(tmp_path)
    run = post_on_chain(state, anvil, tamper=lambda c: more_rounds(c, B))
    anvil.rpc("anvil_mine", [20])
    first = run.chain.reader.read()
    assert first is not None and first.epoch_count == 1
    assert {r.wallet for r in first.registrations} == {A, B, C} and len(first.roots) == 1
    report = compare_ledgers(local_epochs(state), first)
    assert verdicts(report) == {A: Verdict.MATCH, B: Verdict.MISMATCH, C: Verdict.MATCH}
    assert report.roots[0].verdict is Verdict.MATCH and report.differences == 1

    # A claim lands later: the next read sees it, reading from (almost) where the first stopped.
    tree = RewardTree.build(state.cumulative(0))
    run.attestation.send(run.attestation.claim_call(run_id_hash(RUN), A, tree.amount(A), tree.proof(A)))
    calls: list[tuple[int, int]] = []
    original = run.chain.reader._get_logs
    run.chain.reader._get_logs = lambda s, e: calls.append((s, e)) or original(s, e)
    second = run.chain.reader.read()
    assert second is not None and [c.amount_wei for c in second.claims] == [tree.amount(A)]
    assert len(second.contributions) == 3 and len(second.roots) == 1  # nothing counted twice
    assert calls[0][0] == first.to_block + 1 - REORG_MARGIN_BLOCKS  # only the last blocks are read again
    assert compare_ledgers(local_epochs(state), second).claimed_wei == {A: str(tree.amount(A))}


def test_reader_reads_in_ranges_of_log_block_range(tmp_path, anvil) -> None:
    state = closed_state(tmp_path)
    run = post_on_chain(state, anvil)
    run.client.log_block_range = 2
    ranges: list[tuple[int, int]] = []
    original = run.chain.reader._get_logs
    run.chain.reader._get_logs = lambda s, e: ranges.append((s, e)) or original(s, e)
    found = run.chain.reader.read()
    assert found is not None and len(found.contributions) == 3
    assert all(end - start < 2 for start, end in ranges) and len(ranges) >= 3
    assert ranges[0][0] == run.deployment.block and ranges[-1][1] == found.to_block
