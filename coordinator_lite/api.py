"""coordinator_lite's HTTP API (FastAPI): reward proofs for claims, epochs, agents, health.

    GET /proof/{run_id}/{account}  -> {"run_id", "account", "epoch", "root", "cumulative_amount", "proof"}
    GET /api/epochs                -> every epoch (status, pool, paid, carried, root, txs)
    GET /api/epochs/{epoch}        -> one epoch with its records, rejections and outliers
    GET /api/agents                -> per peer totals over all epochs
    GET /api/history.csv           -> the history export (one row per peer per epoch)
    GET /healthz                   -> {"status": "ok", ...}
    GET /, /api/swarm, /api/chain-check -> the swarm page (coordinator_lite.swarm_page)

Wei amounts are decimal strings (they exceed JavaScript's 2**53). With a chain, proofs come from the
latest epoch whose root is ON CHAIN (a proof against a root still in the outbox would not verify);
without one, from the latest closed epoch. Served on 127.0.0.1:8550 by default (``hypergpu-coordinator``).
"""

from __future__ import annotations

import io
from typing import Annotated, Any

from eth_utils import is_address, to_checksum_address
from fastapi import FastAPI, HTTPException, Path
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from agent.chain.merkle import RewardTree
from agent.faces.web import add_security_headers
from coordinator_lite.state import CoordinatorState, EpochRow, EpochStatus
from coordinator_lite.swarm_page import ChainContext, add_swarm_page

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8550


SQLITE_INT_MAX = 2**63 - 1
"""Larger path integers would overflow SQLite's INTEGER: they are refused with 422, not a 500."""


class ErrorDetail(BaseModel):
    detail: str


class ProofResponse(BaseModel):
    """What ``hypergpu claim`` needs: ``claim(runId, account, cumulative_amount, proof)`` against ``root``."""

    run_id: str
    account: str
    epoch: int
    root: str
    cumulative_amount: str
    proof: list[str]


def _epoch_json(row: EpochRow) -> dict[str, Any]:
    def wei(value: int | None) -> str | None:
        return None if value is None else str(value)

    return {
        "epoch": row.epoch,
        "status": row.status.value,
        "opened_at": row.opened_at,
        "closed_at": row.closed_at,
        "posted_at": row.posted_at,
        "epoch_lengths": row.ticks,
        "pool_wei": wei(row.pool_wei),
        "carried_in_wei": wei(row.carried_in_wei),
        "distributed_wei": wei(row.distributed_wei),
        "carried_out_wei": wei(row.carried_out_wei),
        "total_allocated_wei": wei(row.total_allocated),
        "root": row.root,
        "strategy": row.strategy,
    }


def create_app(
    state: CoordinatorState, *, proofs_need_chain: bool, chain: ChainContext | None = None
) -> FastAPI:
    """The API over ``state``. ``proofs_need_chain``: serve proofs only for epochs posted on chain.

    ``chain``: the chain the epochs are posted to, for the swarm page's links and on-chain check
    (``None``: the page says the coordinator runs without a chain).
    """
    app = FastAPI(title="HyperGPU coordinator_lite", version="1")
    trees: dict[int, RewardTree] = {}  # closed epochs never change, so their trees can be cached

    def proof_epoch() -> EpochRow | None:
        wanted = (EpochStatus.POSTED,) if proofs_need_chain else (EpochStatus.CLOSED, EpochStatus.POSTED)
        rows = [row for row in state.epochs() if row.status in wanted]
        return rows[-1] if rows else None

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        rows = state.epochs()
        open_rows = [row.epoch for row in rows if row.status == EpochStatus.OPEN]
        closed = [row.epoch for row in rows if row.status != EpochStatus.OPEN]
        return {
            "status": "ok",
            "run_id": state.run_id,
            "open_epoch": open_rows[0] if open_rows else None,
            "last_closed_epoch": closed[-1] if closed else None,
        }

    @app.get(
        "/proof/{run_id}/{account}",
        response_model=ProofResponse,
        responses={
            400: {"model": ErrorDetail, "description": "not an address"},
            404: {"model": ErrorDetail, "description": "another run, no posted root yet, or no reward"},
        },
    )
    def proof(
        run_id: Annotated[str, Path(max_length=64)], account: Annotated[str, Path(max_length=64)]
    ) -> ProofResponse:
        if run_id != state.run_id:
            raise HTTPException(404, f"this coordinator serves run {state.run_id!r}, not {run_id!r}")
        if not is_address(account):
            raise HTTPException(400, "account must be a 0x-prefixed 20-byte hex address")
        row = proof_epoch()
        if row is None:
            raise HTTPException(404, "no epoch of this run has a posted reward root yet; try again later")
        tree = trees.get(row.epoch)
        if tree is None:
            tree = trees[row.epoch] = RewardTree.build(state.cumulative(row.epoch))
        checksummed = to_checksum_address(account)
        if checksummed not in tree.amounts:
            raise HTTPException(
                404, f"{checksummed} has no reward in run {run_id!r} (as of epoch {row.epoch})"
            )
        return ProofResponse(
            run_id=run_id,
            account=checksummed,
            epoch=row.epoch,
            root=tree.root,
            cumulative_amount=str(tree.amount(checksummed)),
            proof=tree.proof(checksummed),
        )

    @app.get("/api/epochs")
    def epochs() -> list[dict[str, Any]]:
        return [_epoch_json(row) for row in state.epochs()]

    @app.get("/api/epochs/{epoch}", responses={404: {"model": ErrorDetail, "description": "no such epoch"}})
    def epoch_detail(epoch: Annotated[int, Path(ge=0, le=SQLITE_INT_MAX)]) -> dict[str, Any]:
        row = state.epoch(epoch)
        if row is None:
            raise HTTPException(404, f"no epoch {epoch}")
        records = [{**r, "reward_wei": str(r["reward_wei"])} for r in state.records(epoch)]
        return {
            **_epoch_json(row),
            "records": records,
            "rejections": state.rejections(epoch),
            "outliers": state.outliers(epoch),
            "txs": state.txs(epoch),
        }

    @app.get("/api/agents")
    def agents() -> list[dict[str, Any]]:
        return [{**a, "reward_wei": str(a["reward_wei"])} for a in state.agents()]

    @app.get("/api/history.csv", response_class=PlainTextResponse)
    def history() -> str:
        out = io.StringIO()
        state.export_history_csv(out)
        return out.getvalue()

    add_swarm_page(app, state, chain)
    add_security_headers(app)
    return app
