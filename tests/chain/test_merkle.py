"""The reward Merkle tree against OpenZeppelin's JavaScript StandardMerkleTree (recorded vectors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account

from agent.chain.merkle import RewardTree, reward_leaf, verify_proof

VECTORS = json.loads(Path(__file__).with_name("oz_merkle_vectors.json").read_text())["sets"]


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_root_and_proofs_equal_openzeppelin_javascript(name: str) -> None:
    vector = VECTORS[name]
    tree = RewardTree.build({account: int(amount) for account, amount in vector["values"]})
    assert tree.root == vector["root"]
    for (account, amount), expected_proof in zip(vector["values"], vector["proofs"], strict=True):
        assert tree.proof(account) == expected_proof
        assert verify_proof(tree.root, account, int(amount), expected_proof)


def test_proof_fails_for_another_amount_account_or_sibling() -> None:
    accounts = [Account.create().address for _ in range(100)]
    tree = RewardTree.build({account: (index + 1) * 10**15 for index, account in enumerate(accounts)})
    assert tree.total == sum((index + 1) * 10**15 for index in range(100))
    for index, account in enumerate(accounts):
        proof = tree.proof(account)
        assert len(proof) in (6, 7)  # 100 leaves: a complete tree of depth 6-7
        assert verify_proof(tree.root, account, (index + 1) * 10**15, proof)
    account = accounts[3]
    proof = tree.proof(account)
    assert not verify_proof(tree.root, account, tree.amount(account) + 1, proof)
    assert not verify_proof(tree.root, accounts[4], tree.amount(account), proof)
    tampered = [proof[0][:-1] + ("0" if proof[0][-1] != "0" else "1"), *proof[1:]]
    assert not verify_proof(tree.root, account, tree.amount(account), tampered)


def test_leaf_is_double_hashed_and_inputs_are_checked() -> None:
    from eth_abi import encode
    from eth_utils import keccak

    account = "0x1111111111111111111111111111111111111111"
    assert reward_leaf(account, 7) == keccak(keccak(encode(["address", "uint256"], [account, 7])))
    with pytest.raises(ValueError, match="at least one"):
        RewardTree.build({})
    with pytest.raises(ValueError, match="appears twice"):
        mixed_case = Account.create().address
        RewardTree.build({mixed_case: 1, mixed_case.lower(): 2})
    with pytest.raises(ValueError, match="uint256"):
        reward_leaf(account, -1)
    with pytest.raises(KeyError):
        RewardTree.build({account: 1}).proof("0x2222222222222222222222222222222222222222")


def test_json_round_trip_checks_the_root() -> None:
    tree = RewardTree.build({Account.create().address: 10**30, Account.create().address: 3})
    data = json.loads(json.dumps(tree.to_json()))
    assert RewardTree.from_json(data).root == tree.root
    data["amounts"][next(iter(data["amounts"]))] = "4"
    with pytest.raises(ValueError, match="does not match"):
        RewardTree.from_json(data)
