"""Reward proofs as coordinator_lite serves them, fetched and checked before any gas is spent."""

from __future__ import annotations

import json

import httpx
import pytest
from eth_account import Account

from agent.chain.attestation import run_id_hash
from agent.chain.merkle import RewardTree
from agent.chain.proofs import CoordinatorError, RewardProof, fetch_proofs
from coordinator_lite.api import ProofResponse

AGENT, OTHER = Account.create().address, Account.create().address
TREE = RewardTree.build({AGENT: 7 * 10**18, OTHER: 1})


def served(run_id: str = "run-a", account: str = AGENT, **changes: object) -> dict[str, object]:
    response = ProofResponse(  # the coordinator's own response model: the two sides cannot drift apart
        run_id=run_id,
        account=account,
        epoch=2,
        root=TREE.root,
        cumulative_amount=str(TREE.amount(account)),
        proof=TREE.proof(account),
    )
    return {**response.model_dump(), **changes}


def serve(monkeypatch: pytest.MonkeyPatch, routes: dict[str, tuple[int, object]]) -> list[str]:
    asked: list[str] = []

    def get(url: str, timeout: float) -> httpx.Response:
        path = url.removeprefix("http://coordinator")
        asked.append(path)
        status, body = routes.get(path, (404, {"detail": "not found"}))
        return httpx.Response(status, content=json.dumps(body).encode())

    monkeypatch.setattr(httpx, "get", get)
    return asked


def test_the_coordinators_proof_parses_and_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = serve(
        monkeypatch,
        {"/healthz": (200, {"status": "ok", "run_id": "run-a"}), f"/proof/run-a/{AGENT}": (200, served())},
    )
    [proof] = fetch_proofs("http://coordinator/", AGENT.lower())
    assert asked == ["/healthz", f"/proof/run-a/{AGENT}"]  # no --run: the coordinator says which run
    assert proof.cumulative_amount == 7 * 10**18 and proof.epoch == 2 and proof.verifies()
    assert proof.run_id_hash == run_id_hash("run-a")
    assert RewardProof.model_validate(served()).model_dump(mode="json")["cumulative_amount"] == str(
        7 * 10**18
    )


def test_no_reward_yet_is_an_empty_list(monkeypatch: pytest.MonkeyPatch) -> None:
    serve(monkeypatch, {})
    assert fetch_proofs("http://coordinator", AGENT, "run-a") == []


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({f"/proof/run-a/{AGENT}": (500, {"detail": "boom"})}, "answered 500"),
        ({f"/proof/run-a/{AGENT}": (200, served(cumulative_amount="-5"))}, "malformed proof"),
        ({f"/proof/run-a/{AGENT}": (200, served(cumulative_amount="8"))}, "does not lead to its root"),
        ({f"/proof/run-a/{AGENT}": (200, served(account=OTHER))}, "proof for"),
    ],
)
def test_a_bad_answer_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, routes: dict[str, tuple[int, object]], message: str
) -> None:
    serve(monkeypatch, routes)
    with pytest.raises(CoordinatorError, match=message) as error:
        fetch_proofs("http://coordinator", AGENT, "run-a")
    assert "\n" not in str(error.value)


def test_unreachable_coordinator_names_the_settings() -> None:
    with pytest.raises(CoordinatorError, match="HYPERGPU_CHAIN__COORDINATOR_URL"):
        fetch_proofs("http://127.0.0.1:9", AGENT, "run-a", timeout=2)
