"""The coordinator's swarm page: every agent, every epoch with its transactions, and the on-chain check.

``hypergpu-coordinator run`` serves it at http://127.0.0.1:8550/ (static files in ``web/swarm/``, the
agent page's stylesheet from ``web/``). JSON routes, documented in the OpenAPI schema:

    GET /api/swarm        -> SwarmOverview: run, chain, open epoch, agents (status, contribution, rewards),
                             closed epochs with their transactions (explorer links where the chain has one)
    GET /api/chain-check  -> ChainCheckReport: the chain's records and roots against the coordinator's

Wei amounts are decimal strings (they exceed JavaScript's 2**53); times are UTC ISO strings.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from agent.chain.client import ChainUnreachableError
from agent.chain.networks import network_by_name
from agent.protocol.timeutil import UtcDatetime, utc_now
from coordinator_lite.onchain_check import (
    ChainCheckReport,
    OnchainLedgerReader,
    compare_ledgers,
    local_epochs,
)
from coordinator_lite.state import CoordinatorState, EpochStatus

log = logging.getLogger("hypergpu.coordinator")

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
"""Static files: ``web/style.css`` (shared with the agent page) and ``web/swarm/`` (this page)."""


@dataclass(frozen=True)
class ChainContext:
    """The chain the coordinator posts to, as the page needs it.

    Args:
        network: the network's name (local, monad-testnet, monad).
        chain_id: the RPC's chain id.
        contract: the HyperGPUAttestation address.
        explorer_link: tx hash -> explorer URL, or ``None`` where the chain has no explorer (anvil).
        reader: reads the run's events for the on-chain check.
    """

    network: str
    chain_id: int
    contract: str
    explorer_link: Callable[[str], str | None]
    reader: OnchainLedgerReader


class AgentStatus(StrEnum):
    """What the coordinator knows of an agent (it sees verified rounds, not live heartbeats)."""

    ACTIVE = "active"  # rounds counted in the latest closed epoch
    IDLE = "idle"  # rounds counted earlier, none in the latest closed epoch
    BOUND = "bound"  # wallet binding received, no round counted yet


def _utc(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class ChainInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    enabled: bool = Field(description="False when the coordinator runs with --no-chain")
    network: str | None = None
    chain_id: int | None = None
    contract: str | None = None
    has_explorer: bool = Field(default=False, description="whether tx hashes link to a block explorer")
    currency: str = Field(default="MON", description="the native token rewards are paid in")


class AgentView(BaseModel):
    """One agent (peer) of the run: status, contribution over all epochs, rewards."""

    model_config = ConfigDict(frozen=True)

    peer_id: str
    wallet: str
    status: AgentStatus
    registered_on_chain: bool = Field(description="its registration was queued for registerNodes")
    epochs: int = Field(description="closed epochs with a record of this agent")
    rounds_accepted: int
    rounds_missed: int
    compute_seconds: float
    samples: int
    score_last: float | None = Field(description="score in the latest closed epoch (None: no record)")
    score_total: float
    earned_wei: str = Field(description="sum of its rewards over all epochs, wei")
    last_reward_wei: str = Field(description="its reward in the latest closed epoch, wei")
    last_round_at: UtcDatetime | None = Field(description="time of its latest counted round")


class TxView(BaseModel):
    """A chain write of an epoch, as the coordinator's outbox reported it."""

    model_config = ConfigDict(frozen=True)

    key: str
    purpose: str = Field(description="register_nodes | record_contributions | post_epoch_root")
    state: str = Field(description="queued | sent | confirmed | already_done | failed ...")
    tx_hash: str | None
    explorer_url: str | None = Field(description="None on a chain without explorer (local anvil)")
    block_number: int | None
    gas_used: int | None


class EpochView(BaseModel):
    """A closed epoch: what was paid, its root, and its transactions."""

    model_config = ConfigDict(frozen=True)

    epoch: int
    status: EpochStatus
    opened_at: UtcDatetime
    closed_at: UtcDatetime | None
    posted_at: UtcDatetime | None
    available_wei: str = Field(description="pool plus what the previous epoch carried in, wei")
    distributed_wei: str | None
    carried_out_wei: str | None
    root: str | None
    total_allocated_wei: str | None = Field(description="sum of all cumulative rewards in the root, wei")
    strategy: str | None
    agents: int
    rounds_accepted: int
    txs: list[TxView]


class OpenEpochView(BaseModel):
    model_config = ConfigDict(frozen=True)

    epoch: int
    opened_at: UtcDatetime
    epoch_lengths: int = Field(description="epoch lengths it covers (it extends while no round counts)")
    pool_wei: str


class SwarmOverview(BaseModel):
    """Everything the swarm page shows except the on-chain check."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    generated_at: UtcDatetime = Field(default_factory=utc_now)
    chain: ChainInfo
    open_epoch: OpenEpochView | None
    agents: list[AgentView]
    epochs: list[EpochView] = Field(description="closed and posted epochs, oldest first")


def _epoch_of(row: dict[str, object]) -> int:
    return int(str(row["epoch"]))


def _total(rows: list[dict[str, object]], key: str) -> float:
    return sum(float(str(row[key])) for row in rows)


def _count(rows: list[dict[str, object]], key: str) -> int:
    return sum(int(str(row[key])) for row in rows)


def swarm_overview(state: CoordinatorState, chain: ChainContext | None) -> SwarmOverview:
    """Build the page's data from the coordinator's SQLite state (no chain reads)."""
    explorer = chain.explorer_link if chain else (lambda _tx: None)
    rows = state.epochs()
    closed = [row for row in rows if row.status != EpochStatus.OPEN]
    latest = closed[-1].epoch if closed else None
    records = state.records()
    txs_by_epoch: dict[int, list[TxView]] = defaultdict(list)
    for tx in state.txs():
        link = explorer(str(tx["tx_hash"])) if tx["tx_hash"] else None
        view = TxView.model_validate({**tx, "explorer_url": link})
        txs_by_epoch[_epoch_of(tx)].append(view)

    per_epoch: dict[int, list[dict[str, object]]] = defaultdict(list)
    per_peer: dict[str, list[dict[str, object]]] = defaultdict(list)
    for record in records:
        per_epoch[_epoch_of(record)].append(record)
        per_peer[str(record["peer_id"])].append(record)
    registered = state.registered_wallets()
    wallets = {b.binding.peer_id: b.binding.wallet for b in state.bindings()}
    for peer, peer_records in per_peer.items():
        wallets.setdefault(peer, str(peer_records[-1]["wallet"]))

    agents = []
    for peer in sorted(wallets):
        mine = per_peer.get(peer, [])
        last = next((r for r in mine if r["epoch"] == latest), None)
        status = AgentStatus.BOUND if not mine else AgentStatus.ACTIVE if last else AgentStatus.IDLE
        last_round = state.last_timestamp(peer) if mine else None
        agents.append(
            AgentView(
                peer_id=peer,
                wallet=wallets[peer],
                status=status,
                registered_on_chain=wallets[peer] in registered,
                epochs=len(mine),
                rounds_accepted=_count(mine, "rounds_accepted"),
                rounds_missed=_count(mine, "rounds_missed"),
                compute_seconds=_total(mine, "compute_seconds"),
                samples=_count(mine, "samples"),
                score_last=float(str(last["score"])) if last else None,
                score_total=_total(mine, "score"),
                earned_wei=str(_count(mine, "reward_wei")),
                last_reward_wei=str(last["reward_wei"]) if last else "0",
                last_round_at=_utc(last_round),
            )
        )

    def wei(value: int | None) -> str | None:
        return None if value is None else str(value)

    epochs = [
        EpochView(
            epoch=row.epoch,
            status=row.status,
            opened_at=_utc(row.opened_at),
            closed_at=_utc(row.closed_at),
            posted_at=_utc(row.posted_at),
            available_wei=str(row.pool_wei + row.carried_in_wei),
            distributed_wei=wei(row.distributed_wei),
            carried_out_wei=wei(row.carried_out_wei),
            root=row.root,
            total_allocated_wei=wei(row.total_allocated),
            strategy=row.strategy,
            agents=len(per_epoch[row.epoch]),
            rounds_accepted=_count(per_epoch[row.epoch], "rounds_accepted"),
            txs=txs_by_epoch.get(row.epoch, []),
        )
        for row in closed
    ]
    open_rows = [row for row in rows if row.status == EpochStatus.OPEN]
    open_epoch = None
    if open_rows:
        row = open_rows[0]
        open_epoch = OpenEpochView(
            epoch=row.epoch,
            opened_at=_utc(row.opened_at),
            epoch_lengths=row.ticks,
            pool_wei=str(row.pool_wei),
        )
    chain_info = (
        ChainInfo(
            enabled=True,
            network=chain.network,
            chain_id=chain.chain_id,
            contract=chain.contract,
            has_explorer=chain.explorer_link("0x" + "00" * 32) is not None,
            currency=network_by_name(chain.network).currency,
        )
        if chain
        else ChainInfo(enabled=False)
    )
    return SwarmOverview(
        run_id=state.run_id, chain=chain_info, open_epoch=open_epoch, agents=agents, epochs=epochs
    )


def chain_check(state: CoordinatorState, chain: ChainContext | None) -> ChainCheckReport:
    """Read the chain (incrementally) and compare; raises ChainUnreachableError when the RPC is down."""
    if chain is None:
        return ChainCheckReport(
            configured=False, note="this coordinator runs without a chain (--no-chain): nothing to compare"
        )
    ledger = chain.reader.read()
    if ledger is None:
        return ChainCheckReport(
            configured=True,
            note="no transaction of this coordinator is mined yet, so there is no block to start reading "
            "from (start the coordinator with --deployment-file to read from the deployment block)",
        )
    return compare_ledgers(local_epochs(state), ledger, chain.explorer_link)


def add_swarm_page(
    app: FastAPI, state: CoordinatorState, chain: ChainContext | None, static_dir: Path = WEB_DIR
) -> None:
    """Add the page (``/``, ``/static``) and its JSON routes to the coordinator's ``app``."""

    @app.get("/api/swarm", tags=["swarm page"], summary="Agents, epochs and transactions of the run")
    def overview() -> SwarmOverview:
        return swarm_overview(state, chain)

    @app.get(
        "/api/chain-check",
        tags=["swarm page"],
        summary="Compare the chain's records and roots with the coordinator's",
        responses={503: {"description": "the chain's RPC cannot be reached"}},
    )
    def check() -> ChainCheckReport:
        try:
            return chain_check(state, chain)
        except ChainUnreachableError as error:
            raise HTTPException(503, str(error)) from None

    index = static_dir / "swarm" / "index.html"

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        if not index.is_file():
            return PlainTextResponse(
                f"the swarm page's files are missing ({index}); reinstall HyperGPU or use the /api routes",
                status_code=404,
            )
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    if static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=static_dir), name="static")
    else:
        log.warning("swarm page files not found in %s; serving the API only", static_dir)
