"""coordinator_lite.api: proofs that verify against the root, epochs, agents, health, errors."""

from __future__ import annotations

from eth_account import Account
from fastapi.testclient import TestClient

from agent.chain.merkle import verify_proof
from agent.protocol.bindings import NodeBinding, sign_node_binding
from agent.protocol.reports import OFFCHAIN_DOMAIN, RoundReport, build_group_receipt, sign_round_report
from coordinator_lite.api import create_app
from coordinator_lite.epochs import EpochCloser, EpochSettings
from coordinator_lite.state import CoordinatorState

RUN = "api-test"
T0 = 1_795_000_000
PEERS = ["12D3KooWA", "12D3KooWB", "12D3KooWC"]
WALLETS = [Account.from_key(bytes([i + 1]) * 32) for i in range(3)]


class Source:
    def __init__(self, receipts, bindings):
        self.receipts, self.bindings = receipts, bindings

    def read_bindings(self):
        return self.bindings

    def read_receipts(self, since, until):
        return self.receipts


def closed_state(tmp_path) -> CoordinatorState:
    bindings = [
        sign_node_binding(
            w,
            NodeBinding(run_id=RUN, peer_id=p, wallet=w.address, device="cpu", timestamp=T0),
            OFFCHAIN_DOMAIN,
        )
        for p, w in zip(PEERS, WALLETS, strict=True)
    ]
    reports = [
        sign_round_report(
            w,
            RoundReport(
                run_id=RUN, round=1, group_id="ab", members=tuple(PEERS), peer_id=p, samples=10,
                compute_ms=1000 * (i + 1), timestamp=T0,
            ),
            OFFCHAIN_DOMAIN,
        )
        for i, (p, w) in enumerate(zip(PEERS, WALLETS, strict=True))
    ]  # fmt: skip
    state = CoordinatorState(tmp_path / "state.sqlite", RUN)
    now = [T0]
    closer = EpochCloser(
        state,
        EpochSettings(run_id=RUN, epoch_length_s=10, pool_wei_per_epoch=6 * 10**18),
        OFFCHAIN_DOMAIN,
        Source([build_group_receipt(1, reports)], bindings),
        clock=lambda: now[0],
    )
    closer.step()
    now[0] = T0 + 11
    assert closer.step() is not None
    return state


def test_proof_verifies_against_the_served_root(tmp_path):
    client = TestClient(create_app(closed_state(tmp_path), proofs_need_chain=False))
    amounts = []
    for wallet in WALLETS:
        body = client.get(f"/proof/{RUN}/{wallet.address.lower()}").json()
        assert body["account"] == wallet.address and body["epoch"] == 0
        assert verify_proof(body["root"], wallet.address, int(body["cumulative_amount"]), body["proof"])
        amounts.append(int(body["cumulative_amount"]))
    assert amounts == sorted(amounts) and sum(amounts) <= 6 * 10**18  # reward grows with compute time


def test_proofs_wait_for_the_chain_when_one_is_configured(tmp_path):
    client = TestClient(create_app(closed_state(tmp_path), proofs_need_chain=True))
    response = client.get(f"/proof/{RUN}/{WALLETS[0].address}")
    assert response.status_code == 404 and "posted" in response.json()["detail"]


def test_errors_are_clear(tmp_path):
    client = TestClient(create_app(closed_state(tmp_path), proofs_need_chain=False))
    assert client.get(f"/proof/{RUN}/not-an-address").status_code == 400
    assert "serves run" in client.get(f"/proof/other/{WALLETS[0].address}").json()["detail"]
    stranger = Account.from_key(b"\x42" * 32).address
    assert "no reward" in client.get(f"/proof/{RUN}/{stranger}").json()["detail"]
    assert client.get("/api/epochs/7").status_code == 404


def test_epochs_agents_history_and_health(tmp_path):
    client = TestClient(create_app(closed_state(tmp_path), proofs_need_chain=False))
    epochs = client.get("/api/epochs").json()
    assert [e["status"] for e in epochs] == ["closed"]  # the next opens at the coordinator's next step
    assert int(epochs[0]["distributed_wei"]) + int(epochs[0]["carried_out_wei"]) == 6 * 10**18
    detail = client.get("/api/epochs/0").json()
    assert len(detail["records"]) == 3 and detail["rejections"] == []
    agents = client.get("/api/agents").json()
    assert [a["peer_id"] for a in agents] == PEERS
    assert client.get("/api/history.csv").text.count("\n") == 4
    assert client.get("/healthz").json() == {
        "status": "ok", "run_id": RUN, "open_epoch": None, "last_closed_epoch": 0,
    }  # fmt: skip
