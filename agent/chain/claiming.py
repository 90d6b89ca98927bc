"""Reading and claiming an account's rewards: the one code path behind ``hypergpu claim``, the agent's
TUI/web claim button (:meth:`agent.swarm.node.AgentNode.claim`) and ``hypergpu swarm --attest``.

    statuses = reward_statuses(chain, address, run_id)     # no key needed: proof + chain reads
    receipts = send_claims(chain, account, statuses)       # one claim tx per run with something pending
    receipts = claim_pending(chain, account, run_id)       # both at once

A claim is only sent when the coordinator's proof is for the root that is on chain now and the
account's cumulative amount exceeds what it was already paid, so a repeated claim sends nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from agent.chain.networks import ChainConfig

if TYPE_CHECKING:  # web3 is imported lazily: `hypergpu --help` should not pay for it
    from eth_account.signers.local import LocalAccount

    from agent.chain.attestation import Attestation
    from agent.chain.client import ChainClient
    from agent.chain.proofs import RewardProof


def format_amount(wei: int, currency: str) -> str:
    """``wei`` in whole units with every significant decimal, e.g. ``1.5 MON`` (exact, no float)."""
    units = (Decimal(wei) / Decimal(10**18)).normalize()
    return f"{units:f} {currency}"


@dataclass(frozen=True)
class RunRewards:
    """One run's rewards for one account, as the chain and the coordinator agree on them (wei)."""

    run_id: str
    epoch: int
    earned: int
    claimed: int
    root_on_chain: bool

    @property
    def pending(self) -> int:
        """What a claim would pay now: earned (per the on-chain root) minus already claimed."""
        return max(self.earned - self.claimed, 0) if self.root_on_chain else 0


@dataclass(frozen=True)
class RewardStatus:
    """An account's proof in one run and what the chain says about it."""

    proof: RewardProof
    rewards: RunRewards


@dataclass(frozen=True)
class ClaimReceipt:
    """A mined claim. Amounts in wei; ``explorer_link`` is None on a network without an explorer."""

    run_id: str
    epoch: int
    account: str
    amount_wei: int
    tx_hash: str
    gas_used: int
    fee_wei: int
    explorer_link: str | None


def connect(
    chain: ChainConfig, account: LocalAccount | None = None, *, rpc_retries: int | None = None
) -> ChainClient:
    """A client for ``chain`` whose chain id is checked before any read (an RPC of another chain is refused).

    ``rpc_retries`` lowers the retry count where a person is waiting for an answer.
    """
    from agent.chain.client import ChainClient

    client = ChainClient.from_config(chain, account)
    if rpc_retries is not None:
        client.rpc_retries = min(client.rpc_retries, rpc_retries)
    _ = client.chain_id
    return client


def attestation_reader(chain: ChainConfig, *, rpc_retries: int | None = None) -> Attestation:
    """The run's contract through a read-only client (no key)."""
    from agent.chain.attestation import Attestation
    from agent.chain.deploy import attestation_address

    return Attestation(connect(chain, rpc_retries=rpc_retries), attestation_address(chain))


def run_rewards(attestation: Attestation, proofs: Sequence[RewardProof], account: str) -> list[RunRewards]:
    """Per proof: earned (the proof's cumulative amount), claimed so far, and whether its root is on chain."""
    from agent.chain.attestation import as_bytes32

    rows = []
    for proof in proofs:
        run_hash = as_bytes32(proof.run_id_hash)
        state = attestation.epoch_state(run_hash)
        claimed = attestation.claimed_amount(run_hash, account)
        on_chain = "0x" + state.rewards_root.hex() == proof.root
        rows.append(RunRewards(proof.run_id, proof.epoch, proof.cumulative_amount, claimed, on_chain))
    return rows


def reward_statuses(
    chain: ChainConfig,
    address: str,
    run_id: str | None = None,
    *,
    reader: Attestation | None = None,
    rpc_retries: int | None = None,
) -> list[RewardStatus]:
    """The account's proof (from ``chain.coordinator_url``) and its on-chain state, per run.

    ``run_id`` None asks the coordinator which run it serves. Empty when the account has no reward yet.
    ``reader`` reuses an existing read-only contract object (pollers call this every few seconds).
    """
    from agent.chain.proofs import fetch_proofs

    proofs = fetch_proofs(chain.coordinator_url, address, run_id)
    if not proofs:
        return []
    reader = reader or attestation_reader(chain, rpc_retries=rpc_retries)
    rows = run_rewards(reader, proofs, address)
    return [RewardStatus(proof, row) for proof, row in zip(proofs, rows, strict=True)]


def send_claims(
    chain: ChainConfig,
    account: LocalAccount,
    statuses: Sequence[RewardStatus],
    *,
    rpc_retries: int | None = None,
) -> list[ClaimReceipt]:
    """Send one claim per run with something pending (nothing else is sent) and wait for each receipt."""
    from agent.chain.attestation import Attestation, as_bytes32
    from agent.chain.deploy import attestation_address

    claimable = [status for status in statuses if status.rewards.pending > 0]
    if not claimable:
        return []
    attestation = Attestation(connect(chain, account, rpc_retries=rpc_retries), attestation_address(chain))
    receipts = []
    for status in claimable:
        proof = status.proof
        call = attestation.claim_call(
            as_bytes32(proof.run_id_hash), account.address, proof.cumulative_amount, proof.proof
        )
        result = attestation.send(call)
        receipts.append(
            ClaimReceipt(
                run_id=proof.run_id,
                epoch=proof.epoch,
                account=account.address,
                amount_wei=attestation.claimed_in(result),
                tx_hash=result.tx_hash,
                gas_used=result.gas_used,
                fee_wei=result.fee_wei,
                explorer_link=attestation.client.explorer_link(result.tx_hash),
            )
        )
    return receipts


def claim_pending(
    chain: ChainConfig, account: LocalAccount, run_id: str | None = None, *, rpc_retries: int | None = None
) -> tuple[list[RewardStatus], list[ClaimReceipt]]:
    """Read the account's rewards and claim whatever is pending; returns (what was read, what was claimed)."""
    statuses = reward_statuses(chain, account.address, run_id, rpc_retries=rpc_retries)
    return statuses, send_claims(chain, account, statuses, rpc_retries=rpc_retries)


def nothing_to_claim_reason(
    statuses: Sequence[RewardStatus], address: str, run_id: str | None, currency: str
) -> str:
    """One line saying why a claim sends nothing (for when no status has anything pending)."""
    if not statuses:
        where = f"run {run_id}" if run_id else "any run"
        return f"nothing to claim: {address} has no rewards in {where} yet"
    first = statuses[0].rewards
    if not first.root_on_chain:
        return f"nothing to claim yet: run {first.run_id}'s epoch {first.epoch} root is not on chain yet"
    return (
        f"nothing to claim in run {first.run_id}: {format_amount(first.claimed, currency)} earned, "
        "all claimed"
    )
