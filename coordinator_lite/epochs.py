"""Closing epochs: evidence -> verification -> scores -> rewards -> cumulative Merkle tree -> chain.

:class:`EpochCloser` is driven by :meth:`EpochCloser.step`, called every few seconds by the coordinator's
loop (or directly by tests). When the open epoch's time is up it reads the DHT evidence, verifies it
(:mod:`coordinator_lite.verification`), scores (:mod:`coordinator_lite.scoring`), splits the pool
(:mod:`coordinator_lite.rewards`), adds the rewards to every wallet's cumulative amount, builds the
OpenZeppelin-compatible tree (:mod:`agent.chain.merkle`) and commits all of it in ONE SQLite transaction
(:mod:`coordinator_lite.state`). Only then are the chain writes enqueued in the durable outbox
(:mod:`agent.chain.outbox`), under keys that name the effect, so that they are idempotent per (run, epoch):

- ``register:{run}:{epoch}:{i}``: ``registerNodes`` for agents not yet bound on chain;
- ``records:{run}:{epoch}:{i}``: ``recordContributions`` in batches of ``records_batch_size``;
- ``root:{run}:{epoch}``: ``postEpochRoot`` with the cumulative root and total.

After a crash, :meth:`EpochCloser.resume` re-enqueues the writes of every epoch that is closed but not
yet posted: the outbox keeps one entry per key and checks the chain before sending again, so an epoch
lands on chain exactly once. An epoch that ends without a single counted round stays open one more
epoch length and its pool grows (the chain takes no empty epoch).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from agent.chain.attestation import Attestation, Contribution, NodeRegistration, run_id_hash
from agent.chain.merkle import RewardTree
from agent.chain.outbox import Outbox, OutboxEntry, OutboxState
from agent.protocol.bindings import SignedNodeBinding
from agent.protocol.reports import GroupReceipt, ReportDomain
from coordinator_lite.rewards import Strategy, StrategyOptions, split_rewards
from coordinator_lite.scoring import score_epoch
from coordinator_lite.state import CoordinatorState, EpochOutcome, EpochRow, EpochStatus
from coordinator_lite.verification import (
    BindingBook,
    RejectReason,
    VerificationPolicy,
    verify_evidence,
)

log = logging.getLogger("hypergpu.coordinator")

SCORE_SCALE = 1_000_000
UINT64_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1
REGISTRATION_MARGIN_S = 600
"""A registration whose signature expires sooner than this is not sent (the batch would revert)."""


class EvidenceSource(Protocol):
    """Where the coordinator reads agents' bindings and receipts (the DHT, or a list in tests)."""

    def read_bindings(self) -> list[SignedNodeBinding]: ...

    def read_receipts(self, since: float | None, until: float) -> list[GroupReceipt]: ...


@dataclass(frozen=True)
class EpochSettings:
    """How epochs are closed.

    Args:
        run_id: the run's name (``swarm.run_id`` of its agents).
        epoch_length_s: seconds per epoch.
        pool_wei_per_epoch: reward pool of one epoch, wei.
        strategy / strategy_options: how the pool is split (:mod:`coordinator_lite.rewards`).
        policy: verification thresholds.
        read_overlap_s: each read starts this long before the previous one ended (late DHT writes).
        records_batch_size: contribution records per ``recordContributions`` transaction.
        uptime_bucket_s: granularity of the uptime measure, seconds.
    """

    run_id: str
    epoch_length_s: float = 600.0
    pool_wei_per_epoch: int = 10**18
    strategy: Strategy = Strategy.PROPORTIONAL
    strategy_options: StrategyOptions = field(default_factory=StrategyOptions)
    policy: VerificationPolicy = field(default_factory=VerificationPolicy)
    read_overlap_s: float = 180.0
    records_batch_size: int = 100
    uptime_bucket_s: float = 60.0


class ChainSink:
    """The attestation contract plus the outbox that writes to it, for one run.

    ``attestation`` must be bound to a client whose account holds COORDINATOR_ROLE; the outbox's
    ``already_done`` checks are installed by :meth:`outbox_checks` (pass them when creating the outbox).
    """

    def __init__(self, attestation: Attestation, outbox: Outbox, run_id: str) -> None:
        self.attestation = attestation
        self.outbox = outbox
        self.run_id = run_id
        self.run_key = run_id_hash(run_id)

    @staticmethod
    def outbox_checks(attestation: Attestation, run_id: str) -> dict[str, Callable[[OutboxEntry], bool]]:
        """``already_done`` callbacks by purpose: reads that tell whether an entry's effect is on chain."""
        run_key = run_id_hash(run_id)

        def epoch_of(entry: OutboxEntry) -> int:
            return int(entry.key.split(":")[2])  # "<kind>:<run>:<epoch>[:<batch>]"; run ids have no ':'

        return {
            # records of an epoch can no longer be written once its root is posted
            "record_contributions": lambda entry: attestation.epoch_root_posted(run_key, epoch_of(entry)),
            "post_epoch_root": lambda entry: attestation.epoch_root_posted(run_key, epoch_of(entry)),
        }

    def spendable_wei(self, allocated_wei: int) -> int:
        """Wei of the run's funded pool not yet allocated by earlier roots (``allocated_wei`` in all)."""
        return max(0, self.attestation.get_run(self.run_key).reward_pool - allocated_wei)

    def chain_epoch_count(self) -> int:
        return self.attestation.epoch_state(self.run_key).epoch_count


@dataclass
class EpochCloser:
    """Closes one run's epochs. See the module docstring for the sequence and its guarantees.

    Args:
        state: the run's SQLite state.
        settings: epoch length, pool, strategy, policy.
        domain: the EIP-712 domain reports and bindings are signed under.
        source: where bindings and receipts are read.
        chain: where epochs are posted; ``None`` keeps everything local (proofs are still served).
        clock: Unix seconds (tests pass a fake).
    """

    state: CoordinatorState
    settings: EpochSettings
    domain: ReportDomain
    source: EvidenceSource
    chain: ChainSink | None = None
    clock: Callable[[], float] = time.time
    book: BindingBook = field(init=False)

    def __post_init__(self) -> None:
        self.book = BindingBook(self.settings.run_id, self.domain)
        refused = self.book.add_all(self.state.bindings())
        if refused:  # a stored binding is always valid unless the domain changed under the state file
            raise ValueError(f"stored bindings do not verify under this chain/contract: {refused[0]}")

    # ---- the loop's entry points ----------------------------------------------------------------------

    def resume(self) -> None:
        """After a (re)start: check the chain agrees with the state, re-enqueue unposted epochs' writes."""
        if self.chain is not None:
            closed = [row for row in self.state.epochs() if row.status != EpochStatus.OPEN]
            on_chain = self.chain.chain_epoch_count()
            if on_chain > len(closed):
                raise ValueError(
                    f"the chain has {on_chain} posted epochs of run {self.settings.run_id!r} but this state "
                    f"file knows {len(closed)}; use the state directory this run was coordinated from"
                )
            for row in closed:
                if row.status == EpochStatus.CLOSED:
                    if row.epoch < on_chain:
                        self.state.mark_posted(row.epoch, self.clock())
                    else:
                        self._enqueue_chain_writes(row)

    def next_deadline(self) -> float:
        """Unix seconds at which the open epoch is due."""
        row = self.state.open_epoch(self.clock(), self.settings.pool_wei_per_epoch)
        return row.opened_at + row.ticks * self.settings.epoch_length_s

    def step(self) -> EpochRow | None:
        """Close (or extend) the open epoch if it is due; return the epoch closed now, if any."""
        now = self.clock()
        row = self.state.open_epoch(now, self.settings.pool_wei_per_epoch)
        if now < row.opened_at + row.ticks * self.settings.epoch_length_s:
            return None
        return self.close(row, now)

    # ---- closing --------------------------------------------------------------------------------------

    def refresh_bindings(self) -> None:
        """Read the agents' bindings, keep the valid new ones (first binding wins), log the refused ones."""
        for signed in self.source.read_bindings():
            known = self.book.peers.get(signed.binding.peer_id)
            if known is not None and self.book.records.get(signed.binding.peer_id) == signed:
                continue
            refused = self.book.add_all([signed])
            if refused:
                log.warning("binding refused: %s", refused[0])
            else:
                self.state.save_binding(signed)

    def close(self, row: EpochRow, now: float) -> EpochRow | None:
        """Verify the evidence read up to ``now``; commit the epoch, or extend it when nothing counted."""
        settings = self.settings
        self.refresh_bindings()
        since = None if self.state.read_until is None else self.state.read_until - settings.read_overlap_s
        receipts = self.source.read_receipts(since, now)
        result = verify_evidence(
            settings.run_id,
            self.domain,
            receipts,
            self.book.peers,
            now=now,
            counted=self.state,
            pending=self.state.pending_reports(),
            policy=settings.policy,
        )
        replayed = sum(1 for r in result.rejections if r.reason is RejectReason.REPLAYED)
        rejections = [r for r in result.rejections if r.reason is not RejectReason.REPLAYED]
        for rejection in rejections:
            log.info(
                "rejected %s round %d: %s (%s)",
                rejection.peer_id,
                rejection.round,
                rejection.reason,
                rejection.detail,
            )

        if not result.accepted:
            ticks = max(row.ticks + 1, math.floor((now - row.opened_at) / settings.epoch_length_s) + 1)
            self.state.extend_epoch(row.epoch, ticks, ticks * settings.pool_wei_per_epoch)
            self.state.save_progress(result.pending, now)
            log.info(
                "epoch %d: no confirmed rounds yet (%d pending, %d rejected); extended to %d epoch lengths",
                row.epoch, len(result.pending), len(rejections), ticks,
            )  # fmt: skip
            return None

        cards = score_epoch(
            result.accepted, result.missed, epoch_end=now, uptime_bucket_s=settings.uptime_bucket_s
        )
        previous = self.state.latest_closed()
        previous_cumulative = self.state.cumulative(previous.epoch) if previous else {}
        available = row.pool_wei + row.carried_in_wei
        spendable = available
        if self.chain is not None:
            spendable = min(available, self.chain.spendable_wei(sum(previous_cumulative.values())))
        split = split_rewards(cards, spendable, settings.strategy, options=settings.strategy_options)
        carried_out = available - split.total
        cumulative = dict(previous_cumulative)
        for card in cards:
            cumulative[card.wallet] = cumulative.get(card.wallet, 0) + split.rewards.get(card.peer_id, 0)
        tree = RewardTree.build(cumulative)
        outcome = EpochOutcome(
            epoch=row.epoch,
            closed_at=now,
            strategy=settings.strategy.value,
            cards=cards,
            rewards=split.rewards,
            carried_out_wei=carried_out,
            cumulative=dict(tree.amounts),
            root=tree.root,
            accepted=result.accepted,
            rejections=rejections,
            outliers=result.outliers,
            pending=result.pending,
            read_until=now,
        )
        self.state.commit_epoch(outcome)
        log.info(
            "epoch %d closed: %d agents, %d rounds, %d wei paid of %d, %d carried, %d replayed copies "
            "ignored, root %s",
            row.epoch, len(cards), len(result.accepted), split.total, available, carried_out, replayed,
            tree.root,
        )  # fmt: skip
        closed = self.state.epoch(row.epoch)
        assert closed is not None
        if self.chain is not None:
            self._enqueue_chain_writes(closed)
        return closed

    # ---- chain writes ---------------------------------------------------------------------------------

    def _enqueue_chain_writes(self, row: EpochRow) -> None:
        """Enqueue registrations, records and the root of closed epoch ``row`` (idempotent by key)."""
        assert self.chain is not None and row.root is not None and row.total_allocated is not None
        chain, run = self.chain, self.settings.run_id
        attestation, outbox = chain.attestation, chain.outbox
        now = self.clock()

        fresh = [
            b for b in self.state.unregistered_bindings()
            if b.binding.registration_deadline > now + REGISTRATION_MARGIN_S
        ]  # fmt: skip
        batch = self.settings.records_batch_size
        for index in range(0, len(fresh), batch):
            registrations = [
                NodeRegistration(
                    node=b.binding.wallet,
                    peer_id=b.binding.peer_id,
                    deadline=b.binding.registration_deadline,
                    signature=b.registration_signature,
                )
                for b in fresh[index : index + batch]
            ]
            call = attestation.register_nodes_call(chain.run_key, registrations)
            outbox.enqueue(
                f"register:{run}:{row.epoch}:{index // batch}", call.to, call.data, "register_nodes"
            )
        self.state.mark_registered(b.binding.peer_id for b in fresh)

        registered = self.state.registered_wallets()
        contributions = _contributions(self.state.records(row.epoch), registered)
        skipped = len(self.state.records(row.epoch)) - len(contributions)
        if skipped:
            log.warning(
                "epoch %d: %d agents have no usable on-chain registration; their rewards are in the tree "
                "but their records are not posted",
                row.epoch,
                skipped,
            )
        for index in range(0, len(contributions), batch):
            call = attestation.record_contributions_call(
                chain.run_key, row.epoch, contributions[index : index + batch]
            )
            outbox.enqueue(
                f"records:{run}:{row.epoch}:{index // batch}", call.to, call.data, "record_contributions"
            )
        call = attestation.post_epoch_root_call(chain.run_key, row.epoch, row.root, row.total_allocated)
        key = f"root:{run}:{row.epoch}"
        outbox.enqueue(key, call.to, call.data, "post_epoch_root")
        self.state.record_tx(key, row.epoch, "post_epoch_root", OutboxState.QUEUED)

    def on_outbox_finished(self, entry: OutboxEntry) -> None:
        """Outbox callback (sender thread): remember tx hashes; mark the epoch posted when its root landed."""
        parts = entry.key.split(":")
        if len(parts) < 3 or parts[1] != self.settings.run_id:
            return
        epoch = int(parts[2])
        self.state.record_tx(
            entry.key, epoch, entry.purpose, entry.state, entry.tx_hash, entry.block_number, entry.gas_used
        )
        if entry.purpose == "post_epoch_root":
            if entry.state in (OutboxState.CONFIRMED, OutboxState.ALREADY_DONE):
                self.state.mark_posted(epoch, self.clock())
            else:
                log.error("epoch %d root was not posted: %s", epoch, entry.last_error)


def _contributions(records: list[dict[str, object]], registered: set[str]) -> list[Contribution]:
    """Per wallet (several peers of one wallet are summed; the chain binds one each): on-chain records."""
    by_wallet: dict[str, list[dict[str, object]]] = defaultdict(list)
    for record in records:
        if record["wallet"] in registered:
            by_wallet[str(record["wallet"])].append(record)
    contributions = []
    for wallet in sorted(by_wallet):
        rows = by_wallet[wallet]
        contributions.append(
            Contribution(
                node=wallet,
                compute_seconds=min(UINT64_MAX, round(sum(float(r["compute_seconds"]) for r in rows))),
                rounds_accepted=min(UINT32_MAX, sum(int(r["rounds_accepted"]) for r in rows)),
                samples=min(UINT64_MAX, sum(int(r["samples"]) for r in rows)),
                score=min(UINT64_MAX, round(sum(float(r["score"]) for r in rows) * SCORE_SCALE)),
            )
        )
    return contributions
