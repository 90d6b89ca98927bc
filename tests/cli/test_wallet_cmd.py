"""``hypergpu wallet``, ``rewards`` and ``claim`` as a user runs them: against a real anvil and a stand-in
coordinator proof endpoint (stdlib HTTP server serving :func:`agent.chain.proofs.reward_proof`)."""

from __future__ import annotations

import json
import logging
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from eth_account import Account

from agent.chain.anvil import AnvilProcess, find_anvil, free_port
from agent.chain.attestation import Attestation, run_id_hash, sign_node_registration
from agent.chain.client import ChainClient
from agent.chain.deploy import deploy_attestation
from agent.chain.merkle import RewardTree
from agent.chain.proofs import RewardProof
from agent.chain.wallet import unlock_wallet
from agent.cli.main import main

PASSWORD = "s3cret pass phrase"
RUN_NAME = "cli-run"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> CliResult:
    monkeypatch.setattr(sys, "argv", ["hypergpu", *args])
    try:
        main()
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated config dir, a password file, and no chain settings from the outer environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("HYPERGPU_KEYSTORE", "HYPERGPU_WALLET_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "password").write_text(PASSWORD + "\n")
    return tmp_path


def test_wallet_new_show_and_no_secret_in_output_or_logs(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password_file = str(home / "password")
    created = run_cli(
        ["wallet", "new", "--password-file", password_file, "--scrypt-n", "4096"], capsys, monkeypatch
    )
    assert created.code == 0, created.err
    keystore = home / "config" / "hypergpu" / "wallet.json"
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    account = unlock_wallet(keystore, PASSWORD)
    assert account.address in created.out
    shown = run_cli(["wallet", "show"], capsys, monkeypatch)
    assert shown.code == 0 and account.address in shown.out and "mode 600" in shown.out
    again = run_cli(["wallet", "new", "--password-file", password_file], capsys, monkeypatch)
    assert again.code == 2 and again.err.count("\n") == 1 and "already exists" in again.err
    everything = created.out + created.err + shown.out + again.err + caplog.text
    assert account.key.hex() not in everything and PASSWORD not in everything


def test_wallet_import_and_the_errors_a_user_meets(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    account = Account.create()
    key_file = home / "key"
    key_file.write_text(account.key.hex() + "\n")
    keystore = str(home / "imported.json")
    common = ["--keystore", keystore, "--password-file", str(home / "password")]
    imported = run_cli(
        ["wallet", "import", *common, "--private-key-file", str(key_file), "--scrypt-n", "4096"],
        capsys,
        monkeypatch,
    )
    assert imported.code == 0 and account.address in imported.out
    assert account.key.hex() not in imported.out + imported.err + caplog.text

    (home / "wrong").write_text("wrong\n")
    outputs = []
    for args, code, message in [
        (["wallet", "show", "--keystore", str(home / "absent.json")], 2, "no wallet at"),
        (
            ["claim", "--keystore", keystore, "--coordinator", f"http://127.0.0.1:{free_port()}"],
            3,
            "cannot reach the coordinator",
        ),
        (
            [
                "wallet",
                "import",
                "--keystore",
                str(home / "x.json"),
                "--password-file",
                str(home / "password"),
                "--private-key-file",
                str(home / "wrong"),
            ],
            2,
            "not a private key",
        ),
    ]:
        result = run_cli(args, capsys, monkeypatch)
        assert result.code == code, (args, result.err)
        assert message in result.err and result.err.count("\n") == 1 and "Traceback" not in result.err
        outputs.append(result.err)
    assert PASSWORD not in "".join(outputs) + caplog.text


def proof_json(tree: RewardTree, epoch: int, account: str) -> bytes:
    """The body coordinator_lite's ``/proof/{run_id}/{account}`` serves (see coordinator_lite/api.py)."""
    body = {
        "run_id": RUN_NAME,
        "account": account,
        "epoch": epoch,
        "root": tree.root,
        "cumulative_amount": str(tree.amount(account)),
        "proof": tree.proof(account),
    }
    return json.dumps(body).encode()


@pytest.fixture
def coordinator_endpoint() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A stand-in for coordinator_lite's API (``/healthz``, ``/proof/{run}/{account}``): path -> JSON body."""
    routes: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if body is not None else b'{"detail": "not found"}')

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", routes
    server.shutdown()
    server.server_close()


def test_rewards_then_claim_then_nothing_left(
    home: Path,
    coordinator_endpoint: tuple[str, dict[str, bytes]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if find_anvil() is None:
        pytest.skip("anvil is not installed: run scripts/setup (npm ci installs @foundry-rs/anvil)")
    caplog.set_level(logging.DEBUG)
    url, routes = coordinator_endpoint
    keystore = home / "wallet.json"
    password_file = str(home / "password")
    assert (
        run_cli(
            [
                "wallet",
                "new",
                "--keystore",
                str(keystore),
                "--password-file",
                password_file,
                "--scrypt-n",
                "4096",
            ],
            capsys,
            monkeypatch,
        ).code
        == 0
    )
    agent = unlock_wallet(keystore, PASSWORD)
    with AnvilProcess() as anvil:
        coordinator = ChainClient(anvil.rpc_url, anvil.dev_keys[0], poll_interval=0.02)
        deployment = deploy_attestation(coordinator)
        attestation = Attestation(coordinator, deployment.address)
        run = run_id_hash(RUN_NAME)
        attestation.send(
            attestation.create_run_call(
                run, model_hash=run, dataset_id=run, start_time=1, end_time=2**40, pool_wei=10**18
            )
        )
        other = Account.create()
        registrations = [
            sign_node_registration(
                a,
                chain_id=31337,
                contract_address=deployment.address,
                run_id=run,
                peer_id=f"12D3KooW{i}",
                deadline=2**40,
            )
            for i, a in enumerate([agent, other])
        ]
        attestation.send(attestation.register_nodes_call(run, registrations))
        tree = RewardTree.build({agent.address: 3 * 10**15, other.address: 5 * 10**15})
        attestation.send(attestation.post_epoch_root_call(run, 0, tree.root, tree.total))
        coordinator.transact(agent.address, b"", 10**17)  # gas money
        routes["/healthz"] = json.dumps({"status": "ok", "run_id": RUN_NAME}).encode()
        routes[f"/proof/{RUN_NAME}/{agent.address}"] = proof_json(tree, 0, agent.address)
        monkeypatch.setenv("HYPERGPU_CHAIN__RPC_URL", anvil.rpc_url)
        monkeypatch.setenv("HYPERGPU_CHAIN__ATTESTATION_ADDRESS", deployment.address)
        flags = ["--keystore", str(keystore), "--coordinator", url]

        shown = run_cli(["rewards", *flags], capsys, monkeypatch)
        assert shown.code == 0, shown.err
        assert RUN_NAME in shown.out and shown.out.count("0.003 ETH") == 2  # earned and pending

        (home / "wrong").write_text("nope\n")
        refused = run_cli(["claim", *flags, "--password-file", str(home / "wrong")], capsys, monkeypatch)
        assert refused.code == 2 and "wrong password" in refused.err and refused.err.count("\n") == 1

        balance_before = coordinator.balance(agent.address)
        started = time.monotonic()
        claimed = run_cli(
            ["claim", "--run", RUN_NAME, *flags, "--password-file", password_file], capsys, monkeypatch
        )
        claim_seconds = time.monotonic() - started
        assert claimed.code == 0, claimed.err
        assert "claimed 0.003 ETH" in claimed.out
        tx_hash = claimed.out.split("tx ")[1].split()[0]
        receipt = coordinator.receipt(tx_hash)
        assert receipt is not None and receipt.status
        assert coordinator.balance(agent.address) - balance_before == 3 * 10**15 - receipt.fee_wei

        nonce = coordinator.w3.eth.get_transaction_count(agent.address)
        again = run_cli(["claim", *flags, "--password-file", password_file], capsys, monkeypatch)
        assert again.code == 0 and "nothing to claim" in again.out
        assert coordinator.w3.eth.get_transaction_count(agent.address) == nonce  # no transaction sent
        after = run_cli(["rewards", "--run", RUN_NAME, *flags], capsys, monkeypatch)
        assert after.out.count("0.003 ETH") == 2 and "0 ETH" in after.out  # earned, claimed; pending 0

        # The coordinator already serves epoch 1's tree, whose root is still in its outbox: nothing is sent.
        later = RewardTree.build({agent.address: 8 * 10**15, other.address: 9 * 10**15})
        routes[f"/proof/{RUN_NAME}/{agent.address}"] = proof_json(later, 1, agent.address)
        early = run_cli(["claim", *flags, "--password-file", password_file], capsys, monkeypatch)
        assert early.code == 0 and "not on chain yet" in early.out
        assert coordinator.w3.eth.get_transaction_count(agent.address) == nonce
        assert RewardProof.model_validate_json(proof_json(later, 1, agent.address)).verifies()

        everything = shown.out + claimed.out + claimed.err + again.out + caplog.text
        assert agent.key.hex() not in everything and PASSWORD not in everything
        with capsys.disabled():
            print(f"\nhypergpu claim (unlock, proof fetch, claim tx, receipt): {claim_seconds:.2f} s")

    down = run_cli(["rewards", *flags], capsys, monkeypatch)  # anvil is gone now
    assert down.code == 3 and "cannot reach the chain RPC" in down.err and down.err.count("\n") == 1
