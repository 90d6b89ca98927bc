"""The durable outbox against a real anvil: order, idempotency, reverts, kill -9 and an RPC outage."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from eth_account import Account

from agent.chain.anvil import AnvilProcess
from agent.chain.client import ChainClient
from agent.chain.outbox import Outbox, OutboxConflictError, OutboxState

SENDER_SCRIPT = Path(__file__).with_name("outbox_sender_proc.py")
# Init code that deploys a 5-byte contract whose every call reverts (PUSH1 0 PUSH1 0 REVERT).
ALWAYS_REVERTS_INITCODE = bytes.fromhex("6005600c60003960056000f3" + "60006000fd")


def fresh_address() -> str:
    return Account.create().address


def test_same_key_is_one_write_and_other_content_is_refused(tmp_path: Path) -> None:
    # No chain needed: enqueue only writes SQLite (callers never wait for the chain).
    client = ChainClient("http://127.0.0.1:9", Account.create().key.to_0x_hex())
    outbox = Outbox(tmp_path / "outbox.sqlite", client)
    target = fresh_address()
    started = time.monotonic()
    first = outbox.enqueue("epoch:run:1", target, b"\x01\x02", purpose="post_epoch")
    again = outbox.enqueue("epoch:run:1", target, b"\x01\x02", purpose="post_epoch")
    assert time.monotonic() - started < 1.0
    assert first.seq == again.seq
    assert outbox.pending() == 1
    with pytest.raises(OutboxConflictError, match="epoch:run:1"):
        outbox.enqueue("epoch:run:1", target, b"\x09", purpose="post_epoch")
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite", client)
    entry = reopened.get("epoch:run:1")
    assert entry is not None and entry.state is OutboxState.QUEUED and entry.calldata == b"\x01\x02"
    reopened.close()


def test_background_sender_lands_writes_in_order(tmp_path: Path, client: ChainClient) -> None:
    recipient = fresh_address()
    outbox = Outbox(tmp_path / "outbox.sqlite", client).start()
    for index in range(3):
        outbox.enqueue(f"transfer-{index}", recipient, b"", purpose="transfer", value_wei=index + 1)
    assert outbox.wait_until_empty(timeout=20)
    outbox.close()
    entries = Outbox(tmp_path / "outbox.sqlite", client).entries()
    assert [entry.state for entry in entries] == [OutboxState.CONFIRMED] * 3
    assert client.balance(recipient) == 1 + 2 + 3
    assert [entry.nonce for entry in entries] == [0, 1, 2]
    blocks = [entry.block_number for entry in entries]
    assert blocks == sorted(blocks)
    # Monad bills the gas limit: the recorded limit is the estimate plus 10 %, not plus 100,000.
    assert all(entry.gas_limit == entry.gas_estimate * 11 // 10 for entry in entries)


def test_already_done_check_skips_the_write(tmp_path: Path, client: ChainClient) -> None:
    recipient = fresh_address()
    outbox = Outbox(tmp_path / "o.sqlite", client, already_done={"transfer": lambda entry: True})
    outbox.enqueue("transfer-0", recipient, b"", purpose="transfer", value_wei=5)
    outbox.enqueue("other-0", recipient, b"", purpose="other", value_wei=7)
    assert outbox.run_until_empty(timeout=20)
    assert outbox.get("transfer-0").state is OutboxState.ALREADY_DONE  # type: ignore[union-attr]
    assert outbox.get("other-0").state is OutboxState.CONFIRMED  # type: ignore[union-attr]
    assert client.balance(recipient) == 7
    outbox.close()


def test_reverting_write_fails_with_reason_and_queue_moves_on(tmp_path: Path, client: ChainClient) -> None:
    reverter = client.transact(None, ALWAYS_REVERTS_INITCODE).contract_address
    assert reverter is not None
    recipient = fresh_address()
    outbox = Outbox(tmp_path / "o.sqlite", client)
    outbox.enqueue("bad", reverter, b"\x12\x34\x56\x78", purpose="call")
    outbox.enqueue("good", recipient, b"", purpose="transfer", value_wei=3)
    assert outbox.run_until_empty(timeout=20)
    bad = outbox.get("bad")
    assert bad is not None and bad.state is OutboxState.FAILED and bad.tx_hash is None
    assert bad.last_error
    assert outbox.get("good").state is OutboxState.CONFIRMED  # type: ignore[union-attr]
    assert client.balance(recipient) == 3
    outbox.close()


def _start_sender(db: Path, anvil: AnvilProcess, recipient: str, count: int, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, HYPERGPU_TEST_PRIVATE_KEY=anvil.dev_keys[1])
    return subprocess.Popen(
        [sys.executable, str(SENDER_SCRIPT), str(db), anvil.rpc_url, recipient, str(count), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _query(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


def _wait_for_sent_in_mempool(db: Path, anvil: AnvilProcess, timeout: float = 30.0) -> str:
    """The hash of the first entry recorded as sent and known to anvil's pool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            hashes = [row[0] for row in _query(db, "SELECT tx_hash FROM outbox WHERE state = 'sent'")]
        except sqlite3.OperationalError:  # the sender has not created its table yet
            hashes = []
        if hashes and anvil.rpc("eth_getTransactionByHash", [hashes[0]]) is not None:
            return str(hashes[0])
        time.sleep(0.05)
    raise AssertionError("the sender never reached 'sent'")


def _kill_between_send_and_receipt(db: Path, anvil: AnvilProcess, recipient: str, count: int) -> str:
    anvil.rpc("evm_setAutomine", [False])  # transactions wait in the pool: no receipt can arrive
    sender = _start_sender(db, anvil, recipient, count)
    try:
        tx_hash = _wait_for_sent_in_mempool(db, anvil)
    finally:
        sender.send_signal(signal.SIGKILL)
        sender.communicate(timeout=10)
    assert sender.returncode == -signal.SIGKILL
    return tx_hash


def _run_sender_to_completion(db: Path, anvil: AnvilProcess, recipient: str, count: int, *extra: str) -> None:
    sender = _start_sender(db, anvil, recipient, count, *extra)
    out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, err[-2000:]
    assert "drained" in out


def _sender_nonce(anvil: AnvilProcess) -> int:
    return int(
        str(anvil.rpc("eth_getTransactionCount", [Account.from_key(anvil.dev_keys[1]).address, "latest"])), 16
    )


def test_kill9_between_send_and_receipt_then_restart_lands_exactly_once(
    tmp_path: Path, anvil: AnvilProcess
) -> None:
    db, recipient = tmp_path / "outbox.sqlite", fresh_address()
    first_hash = _kill_between_send_and_receipt(db, anvil, recipient, count=3)
    anvil.rpc("evm_setAutomine", [True])
    anvil.rpc("evm_mine")  # the killed process's transaction is mined while nobody watches
    _run_sender_to_completion(db, anvil, recipient, count=3)
    assert int(str(anvil.rpc("eth_getBalance", [recipient, "latest"])), 16) == 3
    assert _sender_nonce(anvil) == 3  # three transactions in all: none was sent twice
    rows = _query(db, "SELECT key, state, tx_hash FROM outbox ORDER BY seq")
    assert [state for _, state, _ in rows] == ["confirmed"] * 3
    assert rows[0][2] == first_hash  # the restarted sender adopted the receipt, it did not resend


def test_kill9_then_chain_restart_that_lost_the_pool_rebroadcasts_the_same_tx(
    tmp_path: Path, anvil: AnvilProcess
) -> None:
    db, recipient = tmp_path / "outbox.sqlite", fresh_address()
    first_hash = _kill_between_send_and_receipt(db, anvil, recipient, count=2)
    anvil.restart()  # a node restart forgets its transaction pool
    assert anvil.rpc("eth_getTransactionByHash", [first_hash]) is None
    _run_sender_to_completion(db, anvil, recipient, count=2)
    assert int(str(anvil.rpc("eth_getBalance", [recipient, "latest"])), 16) == 2
    assert _sender_nonce(anvil) == 2
    receipt = anvil.rpc("eth_getTransactionReceipt", [first_hash])
    assert isinstance(receipt, dict) and receipt["status"] == "0x1"  # the same signed bytes were mined


def test_nonce_taken_by_another_tx_is_signed_again_once(tmp_path: Path, anvil: AnvilProcess) -> None:
    db, recipient = tmp_path / "outbox.sqlite", fresh_address()
    first_hash = _kill_between_send_and_receipt(db, anvil, recipient, count=1)
    # Another transaction with the same nonce and a higher tip replaces the recorded one in the pool.
    other = ChainClient(anvil.rpc_url, anvil.dev_keys[1], poll_interval=0.02)
    pending_tx = anvil.rpc("eth_getTransactionByHash", [first_hash])
    assert isinstance(pending_tx, dict)
    replacement = other.account.sign_transaction(  # type: ignore[union-attr]
        {
            "type": 2,
            "chainId": 31337,
            "nonce": int(pending_tx["nonce"], 16),
            "to": fresh_address(),
            "value": 1,
            "gas": 21000,
            "maxFeePerGas": int(pending_tx["maxFeePerGas"], 16) * 3,
            "maxPriorityFeePerGas": int(pending_tx["maxPriorityFeePerGas"], 16) * 3,
        }
    )
    other.w3.eth.send_raw_transaction(replacement.raw_transaction)
    anvil.rpc("evm_setAutomine", [True])
    anvil.rpc("evm_mine")
    _run_sender_to_completion(db, anvil, recipient, 1, "--already-done-by-balance")
    assert int(str(anvil.rpc("eth_getBalance", [recipient, "latest"])), 16) == 1
    assert anvil.rpc("eth_getTransactionReceipt", [first_hash]) is None
    [(state, tx_hash)] = _query(db, "SELECT state, tx_hash FROM outbox")
    assert state == "confirmed" and tx_hash != first_hash


@pytest.mark.chain
def test_writes_wait_through_a_30s_outage_and_land_after(tmp_path: Path, anvil: AnvilProcess) -> None:
    client = ChainClient(
        anvil.rpc_url, anvil.dev_keys[2], rpc_retries=1, retry_base_delay=0.1, request_timeout=2
    )
    recipient = fresh_address()
    outbox = Outbox(tmp_path / "o.sqlite", client, backoff_initial=0.2, backoff_max=2.0).start()
    outbox.enqueue("before", recipient, b"", purpose="transfer", value_wei=1)
    assert outbox.wait_until_empty(timeout=20)
    anvil.stop()
    outage_started = time.monotonic()
    for index in range(3):
        started = time.monotonic()
        outbox.enqueue(f"during-{index}", recipient, b"", purpose="transfer", value_wei=10)
        assert time.monotonic() - started < 0.5  # the caller (training) never waits for the chain
    time.sleep(30 - (time.monotonic() - outage_started))
    assert outbox.pending() == 3
    assert outbox.last_error  # the sender noticed the outage and is backing off
    anvil.start()
    returned = time.monotonic()
    assert outbox.wait_until_empty(timeout=30)
    landed_after = time.monotonic() - returned
    outbox.close()
    assert client.balance(recipient) == 31
    assert landed_after < 5.0  # backoff is capped at 2 s here
