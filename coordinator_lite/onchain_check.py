"""The on-chain check of the swarm page: does the chain hold what this coordinator decided?

Two parts, so that the comparison can be tested without a chain:

- :class:`OnchainLedgerReader` reads the run's events from the attestation contract in block ranges of
  ``client.log_block_range`` (Monad caps ``eth_getLogs`` at about 1,000 blocks), ONE request per range
  for all four event kinds (``NodeRegistered``, ``ContributionRecorded``, ``EpochRootPosted``,
  ``RewardClaimed``, filtered on the indexed run id). It remembers what it has read and only reads new
  blocks on the next call (re-reading a few recent ones in case of a reorganisation).
- :func:`compare_ledgers` compares those events with the coordinator's SQLite records and says, per epoch
  root and per (epoch, wallet) record, whether they match, differ (which fields), are missing on chain,
  are on chain without a local record, or are still pending (the epoch is closed locally and its writes
  wait in the outbox).

Which records must be on chain: the coordinator posts the record of a wallet only once the wallet is
registered on chain (``registerNodes``), so a record of epoch ``e`` is expected when the wallet's
``NodeRegistered`` event comes before the ``EpochRootPosted`` event of ``e``; otherwise it is shown as
"not posted" (not a difference). Local records are summed per wallet exactly as the coordinator posts them
(:func:`coordinator_lite.epochs._contributions`), so rounding cannot create false differences.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field

from agent.chain.attestation import Attestation, run_id_hash
from agent.protocol.timeutil import UtcDatetime, utc_now

# the coordinator's own aggregation, so both sides are summed and rounded the same way
from coordinator_lite.epochs import _contributions
from coordinator_lite.state import CoordinatorState, EpochStatus

REORG_MARGIN_BLOCKS = 8
"""Blocks re-read on every refresh: Monad finalizes in two rounds; anvil never reorganises."""

_EVENT_SIGNATURES = {
    "NodeRegistered": "NodeRegistered(bytes32,address,string)",
    "ContributionRecorded": "ContributionRecorded(bytes32,uint64,address,uint64,uint32,uint64,uint64)",
    "EpochRootPosted": "EpochRootPosted(bytes32,uint64,bytes32,uint96)",
    "RewardClaimed": "RewardClaimed(bytes32,address,uint256)",
}
_TOPIC_TO_EVENT = {"0x" + keccak(text=sig).hex(): name for name, sig in _EVENT_SIGNATURES.items()}

CONTRIBUTION_FIELDS = ("compute_seconds", "rounds_accepted", "samples", "score")


# ---- what the chain holds -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainPosition:
    """Where an event is: block, transaction, log index (the index makes a log unique within its tx)."""

    block: int
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class OnchainContribution:
    """One ``ContributionRecorded`` event. ``score`` is fixed point (1,000,000 = 1.0)."""

    epoch: int
    wallet: str
    compute_seconds: int
    rounds_accepted: int
    samples: int
    score: int
    at: ChainPosition


@dataclass(frozen=True)
class OnchainRoot:
    """One ``EpochRootPosted`` event; ``root`` is 0x-prefixed lower-case hex."""

    epoch: int
    root: str
    total_allocated_wei: int
    at: ChainPosition


@dataclass(frozen=True)
class OnchainRegistration:
    """One ``NodeRegistered`` event."""

    wallet: str
    peer_id: str
    at: ChainPosition


@dataclass(frozen=True)
class OnchainClaim:
    """One ``RewardClaimed`` event: ``amount_wei`` paid to ``wallet``."""

    wallet: str
    amount_wei: int
    at: ChainPosition


@dataclass
class OnchainLedger:
    """The run's events read so far, and the block range they cover (``from_block..to_block``)."""

    from_block: int
    to_block: int
    epoch_count: int
    """closed epochs according to ``getEpochState`` when the range was read"""
    contributions: list[OnchainContribution] = field(default_factory=list)
    roots: list[OnchainRoot] = field(default_factory=list)
    registrations: list[OnchainRegistration] = field(default_factory=list)
    claims: list[OnchainClaim] = field(default_factory=list)


class OnchainLedgerReader:
    """Reads the run's events from the attestation contract, incrementally.

    Args:
        attestation: the deployed contract (a read-only client is enough).
        run_id: the run's name (``swarm.run_id``).
        from_block: first block to read; ``None`` = ask ``default_from_block`` at the first read.
        default_from_block: where to start when ``from_block`` is unknown (the coordinator passes the
            block of its earliest mined transaction); returns ``None`` while there is none.
    """

    def __init__(
        self,
        attestation: Attestation,
        run_id: str,
        *,
        from_block: int | None = None,
        default_from_block: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.attestation = attestation
        self.client = attestation.client
        self.run_key = run_id_hash(run_id)
        self._from_block = from_block
        self._default_from_block = default_from_block
        self._lock = threading.Lock()
        self._logs: dict[tuple[str, int], tuple[str, dict[str, Any], ChainPosition]] = {}
        self._read_until: int | None = None

    def read(self) -> OnchainLedger | None:
        """Every event of the run from ``from_block`` to the latest block; ``None`` if no start is known.

        Raises ``ChainUnreachableError`` when the RPC cannot be reached.
        """
        with self._lock:
            if self._from_block is None:
                self._from_block = self._default_from_block()
                if self._from_block is None:
                    return None
            latest = self.client.block_number()
            epoch_count = self.attestation.epoch_state(self.run_key).epoch_count
            start = self._from_block
            if self._read_until is not None:
                start = max(self._from_block, self._read_until + 1 - REORG_MARGIN_BLOCKS)
                for key in [k for k, (_, _, at) in self._logs.items() if at.block >= start]:
                    del self._logs[key]
            while start <= latest:
                end = min(start + self.client.log_block_range - 1, latest)
                for raw in self._get_logs(start, end):
                    name = _TOPIC_TO_EVENT.get(_hex(raw["topics"][0]))
                    if name is None:
                        continue
                    decoded = getattr(self.attestation.contract.events, name)().process_log(raw)
                    at = ChainPosition(int(raw["blockNumber"]), _hex(raw["transactionHash"]), raw["logIndex"])
                    self._logs[(at.tx_hash, at.log_index)] = (name, dict(decoded["args"]), at)
                start = end + 1
            self._read_until = latest
            return self._ledger(self._from_block, latest, epoch_count)

    def _get_logs(self, start: int, end: int) -> list[Any]:
        topics = [list(_TOPIC_TO_EVENT), "0x" + self.run_key.hex()]
        query = {"address": self.attestation.address, "fromBlock": start, "toBlock": end, "topics": topics}
        return list(self.client.retrying(lambda: self.client.w3.eth.get_logs(query), "eth_getLogs"))

    def _ledger(self, from_block: int, to_block: int, epoch_count: int) -> OnchainLedger:
        ledger = OnchainLedger(from_block=from_block, to_block=to_block, epoch_count=epoch_count)
        ordered = sorted(self._logs.values(), key=lambda item: (item[2].block, item[2].log_index))
        for name, args, at in ordered:
            if name == "ContributionRecorded":
                ledger.contributions.append(
                    OnchainContribution(
                        epoch=int(args["epoch"]),
                        wallet=to_checksum_address(args["node"]),
                        compute_seconds=int(args["computeSeconds"]),
                        rounds_accepted=int(args["roundsAccepted"]),
                        samples=int(args["samples"]),
                        score=int(args["score"]),
                        at=at,
                    )
                )
            elif name == "EpochRootPosted":
                ledger.roots.append(
                    OnchainRoot(
                        epoch=int(args["epoch"]),
                        root="0x" + bytes(args["rewardsRoot"]).hex(),
                        total_allocated_wei=int(args["totalAllocated"]),
                        at=at,
                    )
                )
            elif name == "NodeRegistered":
                ledger.registrations.append(
                    OnchainRegistration(to_checksum_address(args["node"]), str(args["peerId"]), at)
                )
            else:
                wallet = to_checksum_address(args["account"])
                ledger.claims.append(OnchainClaim(wallet, int(args["amount"]), at))
        return ledger


def _hex(value: Any) -> str:
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return "0x" + bytes(value).hex()


# ---- the report (the page's /api/chain-check) ------------------------------------------------------------


class Verdict(StrEnum):
    """How one record or root compares. Only MISMATCH, MISSING_ON_CHAIN and UNEXPECTED_ON_CHAIN are
    differences; PENDING and NOT_POSTED are expected states."""

    MATCH = "match"
    MISMATCH = "mismatch"
    MISSING_ON_CHAIN = "missing_on_chain"
    UNEXPECTED_ON_CHAIN = "unexpected_on_chain"
    PENDING = "pending"
    NOT_POSTED = "not_posted"


DIFFERENCES = frozenset({Verdict.MISMATCH, Verdict.MISSING_ON_CHAIN, Verdict.UNEXPECTED_ON_CHAIN})


class ContributionValues(BaseModel):
    """The four numbers a contribution record carries (``score`` fixed point, 1,000,000 = 1.0)."""

    model_config = ConfigDict(frozen=True)

    compute_seconds: int
    rounds_accepted: int
    samples: int
    score: int


class RecordCheck(BaseModel):
    """One wallet's record of one epoch, as the coordinator has it and as the chain has it."""

    model_config = ConfigDict(frozen=True)

    epoch: int
    wallet: str
    peer_ids: list[str] = Field(description="the coordinator's peers of this wallet (empty if unknown)")
    verdict: Verdict
    differing_fields: list[str] = Field(description="fields whose values differ (for 'mismatch')")
    coordinator: ContributionValues | None = Field(description="what the coordinator decided")
    onchain: ContributionValues | None = Field(description="what the chain holds (summed if repeated)")
    tx_hash: str | None = Field(description="transaction of the on-chain record (the last one if repeated)")
    explorer_url: str | None
    note: str = ""


class RootCheck(BaseModel):
    """One epoch's rewards root and total, as the coordinator has them and as the chain has them."""

    model_config = ConfigDict(frozen=True)

    epoch: int
    verdict: Verdict
    differing_fields: list[str]
    coordinator_root: str | None
    onchain_root: str | None
    coordinator_total_wei: str | None = Field(description="wei, decimal string")
    onchain_total_wei: str | None = Field(description="wei, decimal string")
    tx_hash: str | None
    explorer_url: str | None
    note: str = ""


class ChainCheckReport(BaseModel):
    """The whole comparison. ``differences`` counts mismatched, missing and unexpected items."""

    model_config = ConfigDict(frozen=True)

    configured: bool = Field(description="False when the coordinator runs without a chain")
    checked_at: UtcDatetime = Field(default_factory=utc_now)
    note: str = ""
    from_block: int | None = None
    to_block: int | None = None
    onchain_epoch_count: int | None = Field(default=None, description="closed epochs per getEpochState")
    differences: int = 0
    roots: list[RootCheck] = Field(default_factory=list)
    records: list[RecordCheck] = Field(default_factory=list)
    claimed_wei: dict[str, str] = Field(
        default_factory=dict, description="wei claimed on chain per wallet (RewardClaimed events)"
    )


@dataclass(frozen=True)
class LocalEpoch:
    """What the coordinator holds for one closed epoch."""

    epoch: int
    posted: bool
    """the coordinator saw its root confirmed on chain"""
    root: str
    total_allocated_wei: int
    contributions: dict[str, tuple[int, int, int, int]]
    """per wallet: (compute_seconds, rounds_accepted, samples, score) as posted on chain"""
    peers_of_wallet: dict[str, list[str]]


def local_epochs(state: CoordinatorState) -> list[LocalEpoch]:
    """The coordinator's closed epochs, with records summed per wallet as they are posted on chain."""
    found = []
    for row in state.epochs():
        if row.status == EpochStatus.OPEN or row.root is None or row.total_allocated is None:
            continue
        records = state.records(row.epoch)
        wallets = {str(r["wallet"]) for r in records}
        peers: dict[str, list[str]] = defaultdict(list)
        for record in records:
            peers[to_checksum_address(str(record["wallet"]))].append(str(record["peer_id"]))
        contributions = {
            to_checksum_address(c.node): (c.compute_seconds, c.rounds_accepted, c.samples, c.score)
            for c in _contributions(records, wallets)
        }
        found.append(
            LocalEpoch(
                epoch=row.epoch,
                posted=row.status == EpochStatus.POSTED,
                root=row.root.lower(),
                total_allocated_wei=row.total_allocated,
                contributions=contributions,
                peers_of_wallet=dict(peers),
            )
        )
    return found


def _values(numbers: tuple[int, ...]) -> ContributionValues:
    return ContributionValues(**dict(zip(CONTRIBUTION_FIELDS, numbers, strict=True)))


def compare_ledgers(
    local: Iterable[LocalEpoch],
    ledger: OnchainLedger,
    explorer_link: Callable[[str], str | None] = lambda _tx: None,
    checked_at: datetime | None = None,
) -> ChainCheckReport:
    """Compare the coordinator's epochs with the chain's events (see the module docstring for the rules)."""
    local_by_epoch = {item.epoch: item for item in local}
    roots_by_epoch: dict[int, list[OnchainRoot]] = defaultdict(list)
    for root in ledger.roots:
        roots_by_epoch[root.epoch].append(root)
    chain_records: dict[tuple[int, str], list[OnchainContribution]] = defaultdict(list)
    for contribution in ledger.contributions:
        chain_records[(contribution.epoch, contribution.wallet)].append(contribution)
    registered_at: dict[str, int] = {}
    for registration in ledger.registrations:
        registered_at.setdefault(registration.wallet, registration.at.block)

    root_checks = [
        _check_root(epoch, local_by_epoch.get(epoch), roots_by_epoch.get(epoch, []), ledger, explorer_link)
        for epoch in sorted(set(local_by_epoch) | set(roots_by_epoch))
    ]
    record_checks = []
    epochs = sorted(set(local_by_epoch) | {epoch for epoch, _ in chain_records})
    for epoch in epochs:
        mine = local_by_epoch.get(epoch)
        root_events = roots_by_epoch.get(epoch, [])
        root_block = root_events[0].at.block if root_events else None
        wallets = set(mine.contributions if mine else ()) | {w for e, w in chain_records if e == epoch}
        for wallet in sorted(wallets):
            record_checks.append(
                _check_record(
                    epoch,
                    wallet,
                    mine,
                    chain_records.get((epoch, wallet), []),
                    root_block,
                    registered_at.get(wallet),
                    explorer_link,
                )
            )
    claimed: dict[str, int] = defaultdict(int)
    for claim in ledger.claims:
        claimed[claim.wallet] += claim.amount_wei
    differences = sum(1 for check in [*root_checks, *record_checks] if check.verdict in DIFFERENCES)
    note = ""
    if ledger.epoch_count > len(roots_by_epoch):
        differences += 1
        note = (
            f"the contract reports {ledger.epoch_count} closed epochs but blocks {ledger.from_block}-"
            f"{ledger.to_block} hold {len(roots_by_epoch)} roots: some were posted before the first block "
            "read (start the coordinator with --deployment-file to read from the deployment block)"
        )
    return ChainCheckReport(
        configured=True,
        checked_at=checked_at or utc_now(),
        note=note,
        from_block=ledger.from_block,
        to_block=ledger.to_block,
        onchain_epoch_count=ledger.epoch_count,
        differences=differences,
        roots=root_checks,
        records=record_checks,
        claimed_wei={wallet: str(amount) for wallet, amount in sorted(claimed.items())},
    )


def _check_root(
    epoch: int,
    mine: LocalEpoch | None,
    events: list[OnchainRoot],
    ledger: OnchainLedger,
    explorer_link: Callable[[str], str | None],
) -> RootCheck:
    event = events[-1] if events else None
    tx_hash = event.at.tx_hash if event else None
    common = {
        "epoch": epoch,
        "coordinator_root": mine.root if mine else None,
        "onchain_root": event.root if event else None,
        "coordinator_total_wei": str(mine.total_allocated_wei) if mine else None,
        "onchain_total_wei": str(event.total_allocated_wei) if event else None,
        "tx_hash": tx_hash,
        "explorer_url": explorer_link(tx_hash) if tx_hash else None,
    }
    if mine is None:
        assert event is not None
        return RootCheck(
            **common, verdict=Verdict.UNEXPECTED_ON_CHAIN, differing_fields=[],
            note="a root the coordinator never decided",
        )  # fmt: skip
    if event is None:
        if mine.posted or epoch < ledger.epoch_count:
            return RootCheck(
                **common, verdict=Verdict.MISSING_ON_CHAIN, differing_fields=[],
                note=f"no EpochRootPosted event in blocks {ledger.from_block}-{ledger.to_block}",
            )  # fmt: skip
        return RootCheck(
            **common, verdict=Verdict.PENDING, differing_fields=[], note="waiting in the coordinator's outbox"
        )
    differing = []
    if event.root != mine.root:
        differing.append("root")
    if event.total_allocated_wei != mine.total_allocated_wei:
        differing.append("total_allocated_wei")
    return RootCheck(
        **common,
        verdict=Verdict.MISMATCH if differing else Verdict.MATCH,
        differing_fields=differing,
        note=f"posted {len(events)} times" if len(events) > 1 else "",
    )


def _check_record(
    epoch: int,
    wallet: str,
    mine: LocalEpoch | None,
    events: list[OnchainContribution],
    root_block: int | None,
    registered_block: int | None,
    explorer_link: Callable[[str], str | None],
) -> RecordCheck:
    local_numbers = mine.contributions.get(wallet) if mine else None
    onchain_numbers = None
    if events:
        onchain_numbers = tuple(
            sum(getattr(e, name) for e in events) for name in CONTRIBUTION_FIELDS
        )  # the contract allows several batches; what counts is the sum
    tx_hash = events[-1].at.tx_hash if events else None
    common = {
        "epoch": epoch,
        "wallet": wallet,
        "peer_ids": mine.peers_of_wallet.get(wallet, []) if mine else [],
        "coordinator": _values(local_numbers) if local_numbers else None,
        "onchain": _values(onchain_numbers) if onchain_numbers else None,
        "tx_hash": tx_hash,
        "explorer_url": explorer_link(tx_hash) if tx_hash else None,
    }
    if local_numbers is None:
        return RecordCheck(
            **common, verdict=Verdict.UNEXPECTED_ON_CHAIN, differing_fields=[],
            note="a record the coordinator never decided",
        )  # fmt: skip
    if onchain_numbers is None:
        if root_block is None:
            verdict = Verdict.MISSING_ON_CHAIN if mine and mine.posted else Verdict.PENDING
            note = "" if verdict is Verdict.MISSING_ON_CHAIN else "waiting in the coordinator's outbox"
        elif registered_block is None or registered_block > root_block:
            verdict = Verdict.NOT_POSTED
            note = "the wallet was not registered on chain when the epoch closed"
        else:
            verdict = Verdict.MISSING_ON_CHAIN
            note = "the wallet was registered but its record is not on chain"
        return RecordCheck(**common, verdict=verdict, differing_fields=[], note=note)
    differing = [
        name
        for name, ours, theirs in zip(CONTRIBUTION_FIELDS, local_numbers, onchain_numbers, strict=True)
        if ours != theirs
    ]
    return RecordCheck(
        **common,
        verdict=Verdict.MISMATCH if differing else Verdict.MATCH,
        differing_fields=differing,
        note=f"recorded {len(events)} times on chain" if len(events) > 1 else "",
    )
