"""ChainClient on a real anvil: gas margin, nonce reconciliation, retries, timeouts, networks, reverts."""

from __future__ import annotations

import threading
import time

import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import function_signature_to_4byte_selector

from agent.chain.anvil import AnvilProcess, free_port
from agent.chain.artifacts import describe_revert
from agent.chain.client import ChainClient, ChainUnreachableError, ReceiptTimeoutError, margin_gas_limit
from agent.chain.networks import ChainConfig, NetworkName, explorer_link, network_by_name
from agent.errors import ConfigError
from agent.protocol.config import load_run_config


def test_gas_limit_margin_is_rounded_up_in_integers() -> None:
    assert margin_gas_limit(21_000, 0.10) == 23_100
    assert margin_gas_limit(49_000, 0.10) == 53_900  # not 149,000 as web3's buffered estimate would give
    assert margin_gas_limit(1, 0.10) == 2
    assert margin_gas_limit(70_001, 0.10) == 77_002
    assert margin_gas_limit(50_000, 0.0) == 50_000


def test_value_transfer_uses_estimate_plus_margin_and_eip1559(client: ChainClient) -> None:
    recipient = Account.create().address
    result = client.transact(recipient, b"", 123)
    sent = client.w3.eth.get_transaction(result.tx_hash)
    assert sent["gas"] == 23_100 and sent["type"] == 2
    block = client.w3.eth.get_block(result.block_number - 1)
    assert sent["maxFeePerGas"] == 2 * block["baseFeePerGas"] + sent["maxPriorityFeePerGas"]
    assert client.balance(recipient) == 123


def test_nonce_is_local_and_reconciled_after_another_sender_used_it(anvil: AnvilProcess) -> None:
    first = ChainClient(anvil.rpc_url, anvil.dev_keys[3], poll_interval=0.02)
    second = ChainClient(anvil.rpc_url, anvil.dev_keys[3], poll_interval=0.02)  # same key, other process
    recipient = Account.create().address
    first.transact(recipient, b"", 1)  # first's counter: next nonce 1
    second.transact(recipient, b"", 1)  # takes nonce 1 behind first's back
    result = first.transact(recipient, b"", 1)  # 'nonce too low' -> reconcile -> nonce 2
    assert first.w3.eth.get_transaction(result.tx_hash)["nonce"] == 2
    assert first.balance(recipient) == 3


def test_concurrent_senders_in_one_process_never_collide(client: ChainClient) -> None:
    recipient = Account.create().address
    errors: list[BaseException] = []

    def send() -> None:
        try:
            client.transact(recipient, b"", 1)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=send) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert client.balance(recipient) == 5


def test_unreachable_rpc_is_retried_then_one_clear_error() -> None:
    client = ChainClient(
        f"http://127.0.0.1:{free_port()}", rpc_retries=2, retry_base_delay=0.1, request_timeout=1
    )
    started = time.monotonic()
    with pytest.raises(ChainUnreachableError, match="cannot reach the chain RPC") as error:
        client.block_number()
    assert time.monotonic() - started >= 0.1 + 0.2 * 0.9  # two backoff sleeps: it did retry
    assert "\n" not in str(error.value)


def test_a_retry_succeeds_when_the_node_comes_back(anvil: AnvilProcess) -> None:
    client = ChainClient(anvil.rpc_url, rpc_retries=6, retry_base_delay=0.2, retry_max_delay=1.0)
    anvil.stop()
    restarter = threading.Timer(1.0, anvil.start)
    restarter.start()
    try:
        assert client.block_number() == 0
    finally:
        restarter.join()


def test_receipt_wait_times_out_while_nothing_is_mined(anvil: AnvilProcess, client: ChainClient) -> None:
    anvil.rpc("evm_setAutomine", [False])
    signed = client.send(Account.create().address, b"", 1)
    assert client.transaction_known(signed.tx_hash)
    with pytest.raises(ReceiptTimeoutError):
        client.wait_for_receipt(signed.tx_hash, timeout=0.3)
    anvil.rpc("evm_mine")
    assert client.wait_for_receipt(signed.tx_hash, timeout=5).status


def test_wrong_chain_is_refused(anvil: AnvilProcess) -> None:
    client = ChainClient(anvil.rpc_url, expected_chain_id=10143)
    with pytest.raises(ConfigError, match=r"chain id 31337.*10143"):
        _ = client.chain_id


def test_networks_explorer_links_and_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    tx = "0x" + "ab" * 32
    assert explorer_link(10143, tx) == f"https://testnet.monadvision.com/tx/{tx}"
    assert explorer_link(143, tx) == f"https://monadvision.com/tx/{tx}"
    assert explorer_link(31337, tx) is None
    assert network_by_name("monad-testnet").chain_id == 10143
    with pytest.raises(ConfigError, match="monad-testnet"):
        network_by_name("mainnet")
    monkeypatch.setenv("HYPERGPU_CHAIN__NETWORK", "monad-testnet")
    monkeypatch.setenv("HYPERGPU_CHAIN__ATTESTATION_ADDRESS", "0x" + "12" * 20)
    chain = load_run_config().chain
    assert chain.network is NetworkName.MONAD_TESTNET
    assert chain.effective_rpc_url == "https://testnet-rpc.monad.xyz"
    monkeypatch.setenv("HYPERGPU_CHAIN__RPC_URL", "ftp://nope")
    with pytest.raises(ConfigError, match=r"chain\.rpc_url"):
        load_run_config()
    assert ChainConfig().effective_rpc_url == "http://127.0.0.1:8545"


def test_revert_data_is_decoded() -> None:
    error_string = function_signature_to_4byte_selector("Error(string)") + encode(["string"], ["boom"])
    assert describe_revert(error_string) == "boom"
    panic = function_signature_to_4byte_selector("Panic(uint256)") + encode(["uint256"], [0x11])
    assert "overflow" in describe_revert(panic)
    assert describe_revert("0x") == "reverted"
    assert "unknown error 0xdeadbeef" in describe_revert("0xdeadbeef")
