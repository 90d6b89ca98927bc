"""The swarm page's routes (/, /api/swarm, /api/chain-check) through FastAPI's TestClient, with and
without a real anvil; a record forged on chain must come out highlighted as a difference."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from swarm_page_fixtures import PEERS, WALLETS, closed_state, more_rounds, post_on_chain

from agent.chain.anvil import AnvilProcess, find_anvil
from agent.chain.networks import NETWORKS, NetworkName
from coordinator_lite.api import create_app

A, B, C = (w.address for w in WALLETS)


@pytest.fixture
def anvil() -> Iterator[AnvilProcess]:
    if find_anvil() is None:
        pytest.skip("anvil is not installed: run scripts/setup (npm ci installs @foundry-rs/anvil)")
    with AnvilProcess(accounts=3) as chain:
        yield chain


def test_overview_without_chain_lists_agents_epochs_and_says_there_is_no_chain(tmp_path) -> None:
    state = closed_state(tmp_path, extra_bound_peer=True)
    client = TestClient(create_app(state, proofs_need_chain=False))
    body = client.get("/api/swarm").json()
    assert body["run_id"] == "page-test" and body["chain"]["enabled"] is False
    agents = {a["peer_id"]: a for a in body["agents"]}
    assert [agents[p]["status"] for p in PEERS] == ["active"] * 3
    assert agents["12D3KooWLateJoiner"]["status"] == "bound" and agents["12D3KooWLateJoiner"]["epochs"] == 0
    assert [agents[p]["rounds_accepted"] for p in PEERS] == [2, 2, 2]
    assert [agents[p]["compute_seconds"] for p in PEERS] == [2.0, 4.0, 6.0]
    (epoch,) = body["epochs"]
    assert epoch["agents"] == 3 and epoch["rounds_accepted"] == 6 and epoch["txs"] == []
    assert sum(int(agents[p]["earned_wei"]) for p in PEERS) == int(epoch["distributed_wei"])
    earned = [int(agents[p]["earned_wei"]) for p in PEERS]
    assert earned == sorted(earned) and earned[0] > 0  # more compute, more reward
    assert agents[PEERS[0]]["last_round_at"].endswith("Z")
    check = client.get("/api/chain-check").json()
    assert check["configured"] is False and "--no-chain" in check["note"] and check["differences"] == 0


def test_page_and_its_files_are_served_with_a_strict_policy(tmp_path) -> None:
    client = TestClient(create_app(closed_state(tmp_path), proofs_need_chain=False))
    page = client.get("/")
    assert page.status_code == 200 and "HyperGPU swarm" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for path in ("/static/style.css", "/static/swarm/swarm.css", "/static/swarm/swarm.js"):
        assert client.get(path).status_code == 200, path


def test_new_routes_are_documented_with_their_models(tmp_path) -> None:
    schema = (
        TestClient(create_app(closed_state(tmp_path), proofs_need_chain=False)).get("/openapi.json").json()
    )
    for path, model in (("/api/swarm", "SwarmOverview"), ("/api/chain-check", "ChainCheckReport")):
        response = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert response == {"$ref": f"#/components/schemas/{model}"}
    assert {"AgentView", "EpochView", "TxView", "RecordCheck", "RootCheck"} <= set(
        schema["components"]["schemas"]
    )


def test_a_forged_onchain_record_is_highlighted(tmp_path, anvil) -> None:
    state = closed_state(tmp_path)
    run = post_on_chain(state, anvil, tamper=lambda c: more_rounds(c, B, extra=5))
    client = TestClient(create_app(state, proofs_need_chain=True, chain=run.chain))
    check = client.get("/api/chain-check").json()
    assert check["configured"] is True and check["differences"] == 1
    records = {r["wallet"]: r for r in check["records"]}
    assert records[B]["verdict"] == "mismatch" and records[B]["differing_fields"] == ["rounds_accepted"]
    assert records[B]["onchain"]["rounds_accepted"] == records[B]["coordinator"]["rounds_accepted"] + 5
    assert records[B]["peer_ids"] == [PEERS[1]]
    assert records[A]["verdict"] == records[C]["verdict"] == "match"
    assert [r["verdict"] for r in check["roots"]] == ["match"]
    assert check["onchain_epoch_count"] == 1 and check["from_block"] == run.deployment.block

    overview = client.get("/api/swarm").json()
    assert overview["chain"] == {
        "enabled": True, "network": "local", "chain_id": 31337, "contract": run.deployment.address,
        "has_explorer": False, "currency": "ETH",
    }  # fmt: skip
    txs = {tx["purpose"]: tx for tx in overview["epochs"][0]["txs"]}
    assert set(txs) == {"register_nodes", "record_contributions", "post_epoch_root"}
    assert txs["post_epoch_root"]["tx_hash"] == check["roots"][0]["tx_hash"]
    assert all(tx["explorer_url"] is None for tx in txs.values())  # anvil has no explorer
    assert overview["epochs"][0]["status"] == "posted"


def test_an_honest_chain_matches_and_testnet_hashes_link_to_the_explorer(tmp_path, anvil) -> None:
    state = closed_state(tmp_path)
    testnet = NETWORKS[NetworkName.MONAD_TESTNET]
    run = post_on_chain(state, anvil, explorer_link=testnet.explorer_link)
    client = TestClient(create_app(state, proofs_need_chain=True, chain=run.chain))
    check = client.get("/api/chain-check").json()
    assert check["differences"] == 0 and {r["verdict"] for r in check["records"]} == {"match"}
    root = check["roots"][0]
    assert root["explorer_url"] == f"https://testnet.monadvision.com/tx/{root['tx_hash']}"
    overview = client.get("/api/swarm").json()
    assert overview["chain"]["has_explorer"] is True
    for tx in overview["epochs"][0]["txs"]:
        assert tx["explorer_url"] == f"https://testnet.monadvision.com/tx/{tx['tx_hash']}"


def test_an_unreachable_chain_answers_503_with_the_reason(tmp_path, anvil) -> None:
    state = closed_state(tmp_path)
    run = post_on_chain(state, anvil)
    run.client.rpc_retries = 0
    anvil.stop()
    client = TestClient(create_app(state, proofs_need_chain=True, chain=run.chain))
    response = client.get("/api/chain-check")
    assert response.status_code == 503 and "cannot reach the chain RPC" in response.json()["detail"]
    assert client.get("/api/swarm").status_code == 200  # the page itself does not need the chain
