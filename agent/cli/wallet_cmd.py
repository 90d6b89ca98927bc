"""``hypergpu wallet new | import | show``, ``hypergpu rewards``, ``hypergpu claim``: the agent's money side.

    hypergpu wallet new                       # encrypted keystore at ~/.config/hypergpu/wallet.json
    hypergpu rewards [--run ID]               # earned, claimed and pending, per run (no password needed)
    hypergpu claim [--run ID]                 # fetch the proof, send the claim, print amount, tx, explorer

The chain and the coordinator come from ``--config FILE`` / ``HYPERGPU_CHAIN__*`` / the flags
(``--network``, ``--rpc-url``, ``--coordinator``). Every failure is one line (no wallet, wrong password,
coordinator or RPC unreachable) and the key and password are never printed or logged.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from agent.chain.claiming import connect, format_amount, reward_statuses, run_rewards, send_claims
from agent.chain.networks import ChainConfig
from agent.chain.wallet import (
    DEFAULT_SCRYPT_N,
    WalletError,
    create_wallet,
    import_wallet,
    keystore_address,
    keystore_path,
    read_password,
    unlock_wallet,
)
from agent.protocol.config import load_run_config

if TYPE_CHECKING:  # web3 is imported lazily: `hypergpu --help` should not pay for it
    from eth_account.signers.local import LocalAccount

    from agent.chain.client import ChainClient

wallet_app = typer.Typer(help="Create, import and show the agent's wallet.", no_args_is_help=True)

KeystoreOption = typer.Option(
    None, "--keystore", help="keystore file (default $HYPERGPU_KEYSTORE or ~/.config/hypergpu/wallet.json)"
)
PasswordFileOption = typer.Option(
    None,
    "--password-file",
    help="file whose first line is the password (else $HYPERGPU_WALLET_PASSWORD, a prompt)",
)
ConfigOption = typer.Option(None, "--config", help="TOML run configuration with a [chain] section")
NetworkOption = typer.Option(None, "--network", help="local, monad-testnet or monad")
RpcOption = typer.Option(None, "--rpc-url", help="JSON-RPC URL (default: the network's)")
CoordinatorOption = typer.Option(
    None, "--coordinator", help="coordinator URL (default http://127.0.0.1:8550)"
)
RunOption = typer.Option(None, "--run", help="run id (name); default: every run that rewarded this wallet")
CLI_RPC_RETRIES = 2  # a person is waiting: fail within seconds, not after the agent's long backoff


def _console() -> Console:
    return Console(highlight=False)


# ---- wallet ------------------------------------------------------------------------------------------


@wallet_app.command("new")
def new(
    keystore: Path | None = KeystoreOption,
    password_file: Path | None = PasswordFileOption,
    scrypt_n: int = typer.Option(DEFAULT_SCRYPT_N, "--scrypt-n", help="scrypt cost, a power of two"),
) -> None:
    """Create a new key, encrypted with a password, in a keystore file readable only by you."""
    path = keystore_path(keystore)
    if path.exists():
        raise WalletError(f"a wallet already exists at {path}; keep it, or give another --keystore path")
    password = read_password(password_file, confirm=True)
    address = create_wallet(path, password, scrypt_n=scrypt_n)
    console = _console()
    console.print(f"created wallet [bold]{address}[/bold]")
    console.print(f"keystore: {path} (mode 600)")
    console.print("Back up the keystore file and remember its password: rewards need both.")


@wallet_app.command("import")
def import_(
    keystore: Path | None = KeystoreOption,
    password_file: Path | None = PasswordFileOption,
    private_key_file: Path | None = typer.Option(
        None, "--private-key-file", help="file whose first line is the hex key (else a hidden prompt)"
    ),
    scrypt_n: int = typer.Option(DEFAULT_SCRYPT_N, "--scrypt-n", help="scrypt cost, a power of two"),
) -> None:
    """Import an existing private key into an encrypted keystore (never pass a key as an argument)."""
    path = keystore_path(keystore)
    if path.exists():
        raise WalletError(f"a wallet already exists at {path}; keep it, or give another --keystore path")
    if private_key_file is not None:
        try:
            lines = private_key_file.expanduser().read_text().splitlines()
        except OSError as exc:
            raise WalletError(f"cannot read the key file {private_key_file}: {exc.strerror}") from None
        private_key = lines[0] if lines else ""
    else:
        private_key = typer.prompt("Private key (hex)", hide_input=True)
    password = read_password(password_file, confirm=True)
    address = import_wallet(path, private_key, password, scrypt_n=scrypt_n)
    _console().print(f"imported wallet [bold]{address}[/bold] into {path} (mode 600)")


@wallet_app.command("show")
def show(
    keystore: Path | None = KeystoreOption,
    password_file: Path | None = PasswordFileOption,
    balance: bool = typer.Option(False, "--balance", help="also read the balance from the chain"),
    config: Path | None = ConfigOption,
    network: str | None = NetworkOption,
    rpc_url: str | None = RpcOption,
) -> None:
    """Show the wallet's address and keystore file (no password needed), and its balance on request."""
    path = keystore_path(keystore)
    address = keystore_address(path)
    if address is None:  # keystores written elsewhere may omit the address: unlock to learn it
        address = unlock_wallet(path, read_password(password_file)).address
    mode = stat.S_IMODE(os.stat(path).st_mode)
    console = _console()
    console.print(f"address:  [bold]{address}[/bold]")
    console.print(f"keystore: {path} (mode {mode:o})")
    if balance:
        chain = _chain_config(config, network, rpc_url, None)
        client = _client(chain, None)
        console.print(f"balance:  {format_amount(client.balance(address), chain.network_info.currency)}")


# ---- rewards and claim -------------------------------------------------------------------------------


def _chain_config(
    config: Path | None, network: str | None, rpc_url: str | None, coordinator: str | None
) -> ChainConfig:
    overrides = {"chain": {"network": network, "rpc_url": rpc_url, "coordinator_url": coordinator}}
    return load_run_config(config, overrides).chain


def _client(chain: ChainConfig, account: LocalAccount | None) -> ChainClient:
    # a person is waiting: fail within seconds; refuses an RPC that serves another chain before any read
    return connect(chain, account, rpc_retries=CLI_RPC_RETRIES)


@dataclass(frozen=True)
class _Context:
    chain: ChainConfig
    address: str


def _load_context(
    config: Path | None,
    network: str | None,
    rpc_url: str | None,
    coordinator: str | None,
    keystore: Path | None,
) -> _Context:
    chain = _chain_config(config, network, rpc_url, coordinator)
    address = keystore_address(keystore_path(keystore))
    if address is None:
        raise WalletError("the keystore does not record its address; run `hypergpu wallet show` first")
    return _Context(chain, address)


def rewards(
    run: str | None = RunOption,
    coordinator: str | None = CoordinatorOption,
    config: Path | None = ConfigOption,
    network: str | None = NetworkOption,
    rpc_url: str | None = RpcOption,
    keystore: Path | None = KeystoreOption,
) -> None:
    """Show earned, claimed and pending rewards per run (reads the chain and the coordinator's proofs)."""
    from agent.chain.attestation import Attestation
    from agent.chain.deploy import attestation_address
    from agent.chain.proofs import fetch_proofs

    context = _load_context(config, network, rpc_url, coordinator, keystore)
    proofs = fetch_proofs(context.chain.coordinator_url, context.address, run)
    console = _console()
    if not proofs:
        where = f"run {run}" if run else "any run"
        console.print(f"no rewards for {context.address} in {where} yet")
        return
    client = _client(context.chain, None)
    attestation = Attestation(client, attestation_address(context.chain))
    currency = context.chain.network_info.currency
    table = Table(title=f"rewards of {context.address}")
    for column in ("run", "epoch", "earned", "claimed", "pending"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for row in run_rewards(attestation, proofs, context.address):
        pending = format_amount(row.pending, currency) + (
            "" if row.root_on_chain else " (root not on chain yet)"
        )
        table.add_row(
            row.run_id,
            str(row.epoch),
            format_amount(row.earned, currency),
            format_amount(row.claimed, currency),
            pending,
        )
    console.print(table)


def claim(
    run: str | None = RunOption,
    coordinator: str | None = CoordinatorOption,
    config: Path | None = ConfigOption,
    network: str | None = NetworkOption,
    rpc_url: str | None = RpcOption,
    keystore: Path | None = KeystoreOption,
    password_file: Path | None = PasswordFileOption,
) -> None:
    """Claim pending rewards: fetch the proof, send the claim, print amount, tx hash and explorer link.

    Sends nothing when nothing is pending.
    """
    context = _load_context(config, network, rpc_url, coordinator, keystore)
    statuses = reward_statuses(context.chain, context.address, run, rpc_retries=CLI_RPC_RETRIES)
    console = _console()
    if not statuses:
        where = f"run {run}" if run else "any run"
        console.print(f"nothing to claim: {context.address} has no rewards in {where} yet")
        return
    currency = context.chain.network_info.currency
    for status in statuses:
        row = status.rewards
        if not row.root_on_chain:
            console.print(
                f"run {row.run_id}: the coordinator's epoch {row.epoch} root is not on chain yet; "
                "try again soon"
            )
        elif row.pending == 0:
            console.print(
                f"run {row.run_id}: nothing to claim "
                f"({format_amount(row.claimed, currency)} earned, all claimed)"
            )
    if not any(status.rewards.pending > 0 for status in statuses):
        return
    account = unlock_wallet(keystore_path(keystore), read_password(password_file))
    for receipt in send_claims(context.chain, account, statuses, rpc_retries=CLI_RPC_RETRIES):
        console.print(
            f"run {receipt.run_id}: claimed [bold]{format_amount(receipt.amount_wei, currency)}[/bold]"
        )
        console.print(f"  tx {receipt.tx_hash}")
        if receipt.explorer_link:
            console.print(f"  {receipt.explorer_link}")
