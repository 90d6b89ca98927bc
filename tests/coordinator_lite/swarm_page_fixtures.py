"""A small run for the swarm page tests: three agents, one closed epoch, optionally posted on a real anvil.

``closed_state`` closes epoch 0 from signed receipts exactly as the coordinator does. ``post_on_chain``
deploys the contract, registers the wallets, posts epoch 0's records and root the way the outbox would
(recording the transactions in the coordinator's state), except that ``tamper`` can change what is
written on chain for some wallets: the on-chain check must then highlight those records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from eth_account import Account

from agent.chain.anvil import AnvilProcess
from agent.chain.attestation import Attestation, Contribution, run_id_hash, sign_node_registration
from agent.chain.client import ChainClient
from agent.chain.deploy import Deployment, deploy_attestation
from agent.protocol.bindings import NodeBinding, sign_node_binding
from agent.protocol.reports import OFFCHAIN_DOMAIN, RoundReport, build_group_receipt, sign_round_report
from coordinator_lite.epochs import EpochCloser, EpochSettings, _contributions
from coordinator_lite.onchain_check import OnchainLedgerReader
from coordinator_lite.state import CoordinatorState
from coordinator_lite.swarm_page import ChainContext

RUN = "page-test"
T0 = 1_795_000_000
PEERS = ["12D3KooWPageAgentA", "12D3KooWPageAgentB", "12D3KooWPageAgentC"]
WALLETS = [Account.from_key(bytes([i + 11]) * 32) for i in range(3)]
POOL_WEI = 6 * 10**18
FAR_FUTURE = 2**40


class ListSource:
    def __init__(self, receipts, bindings) -> None:
        self.receipts, self.bindings = receipts, bindings

    def read_bindings(self):
        return self.bindings

    def read_receipts(self, since, until):
        return self.receipts


def closed_state(folder: Path, *, extra_bound_peer: bool = False) -> CoordinatorState:
    """Epoch 0 closed with two rounds of all three agents (agent i computes i+1 s per round)."""
    bindings = [
        sign_node_binding(
            w,
            NodeBinding(run_id=RUN, peer_id=p, wallet=w.address, device="cpu", timestamp=T0),
            OFFCHAIN_DOMAIN,
        )
        for p, w in zip(PEERS, WALLETS, strict=True)
    ]
    receipts = []
    for number, group in ((1, "aa"), (2, "bb")):
        reports = [
            sign_round_report(
                w,
                RoundReport(
                    run_id=RUN, round=number, group_id=group, members=tuple(PEERS), peer_id=p, samples=640,
                    compute_ms=1000 * (i + 1), timestamp=T0 + number,
                ),
                OFFCHAIN_DOMAIN,
            )
            for i, (p, w) in enumerate(zip(PEERS, WALLETS, strict=True))
        ]  # fmt: skip
        receipts.append(build_group_receipt(number, reports))
    if extra_bound_peer:  # an agent whose binding arrived but who has no round counted yet
        late = Account.from_key(b"\x2a" * 32)
        record = NodeBinding(
            run_id=RUN, peer_id="12D3KooWLateJoiner", wallet=late.address, device="cpu", timestamp=T0
        )
        bindings.append(sign_node_binding(late, record, OFFCHAIN_DOMAIN))
    state = CoordinatorState(folder / "state.sqlite", RUN)
    now = [float(T0)]
    closer = EpochCloser(
        state,
        EpochSettings(run_id=RUN, epoch_length_s=10, pool_wei_per_epoch=POOL_WEI),
        OFFCHAIN_DOMAIN,
        ListSource(receipts, bindings),
        clock=lambda: now[0],
    )
    closer.step()
    now[0] = T0 + 11
    assert closer.step() is not None
    return state


@dataclass
class PostedRun:
    client: ChainClient
    deployment: Deployment
    attestation: Attestation
    chain: ChainContext


def post_on_chain(
    state: CoordinatorState,
    anvil: AnvilProcess,
    *,
    tamper: Callable[[Contribution], Contribution] = lambda c: c,
    explorer_link: Callable[[str], str | None] | None = None,
) -> PostedRun:
    """Deploy, create the run, register the three wallets, post epoch 0 (records through ``tamper``)."""
    client = ChainClient(anvil.rpc_url, anvil.dev_keys[0], expected_chain_id=31337, poll_interval=0.02)
    deployment = deploy_attestation(client)
    attestation = Attestation(client, deployment.address)
    run_key = run_id_hash(RUN)
    attestation.send(
        attestation.create_run_call(
            run_key,
            model_hash=run_id_hash("cnn-small"),
            dataset_id=run_id_hash("mnist"),
            start_time=int(time.time()),
            end_time=FAR_FUTURE,
            pool_wei=POOL_WEI,
        )
    )
    registrations = [
        sign_node_registration(
            w,
            chain_id=31337,
            contract_address=deployment.address,
            run_id=run_key,
            peer_id=p,
            deadline=FAR_FUTURE,
        )
        for p, w in zip(PEERS, WALLETS, strict=True)
    ]
    sent = attestation.send(attestation.register_nodes_call(run_key, registrations))
    state.record_tx(f"register:{RUN}:0:0", 0, "register_nodes", "confirmed", sent.tx_hash, sent.block_number)
    state.mark_registered(PEERS)
    records = state.records(0)
    contributions = [tamper(c) for c in _contributions(records, {str(r["wallet"]) for r in records})]
    sent = attestation.send(attestation.record_contributions_call(run_key, 0, contributions))
    state.record_tx(
        f"records:{RUN}:0:0",
        0,
        "record_contributions",
        "confirmed",
        sent.tx_hash,
        sent.block_number,
        sent.gas_used,
    )
    row = state.epoch(0)
    assert row is not None and row.root is not None and row.total_allocated is not None
    sent = attestation.send(attestation.post_epoch_root_call(run_key, 0, row.root, row.total_allocated))
    state.record_tx(
        f"root:{RUN}:0", 0, "post_epoch_root", "confirmed", sent.tx_hash, sent.block_number, sent.gas_used
    )
    state.mark_posted(0, time.time())
    chain = ChainContext(
        network="local",
        chain_id=31337,
        contract=deployment.address,
        explorer_link=explorer_link or client.explorer_link,
        reader=OnchainLedgerReader(attestation, RUN, from_block=deployment.block),
    )
    return PostedRun(client, deployment, attestation, chain)


def more_rounds(contribution: Contribution, wallet: str, extra: int = 5) -> Contribution:
    """``contribution`` with ``extra`` more rounds if it is ``wallet``'s (a forged on-chain record)."""
    if contribution.node != wallet:
        return contribution
    return replace(contribution, rounds_accepted=contribution.rounds_accepted + extra)
