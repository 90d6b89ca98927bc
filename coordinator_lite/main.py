"""``hypergpu-coordinator run --run-id mnist-demo --initial-peers /ip4/.../p2p/... --contract 0x...`` — the
coordinator_lite service: reads the agents' signed round receipts from the run's DHT, closes an epoch
every ``--epoch-length`` seconds (verify, score, split the pool, cumulative Merkle root), posts records
and the root on chain through the durable outbox, and serves reward proofs and the swarm page (agents,
epochs, rewards, an on-chain check: coordinator_lite.swarm_page) on http://127.0.0.1:8550.

Without a chain (``--no-chain``) it does everything but the posting. Its state lives in
``--state-dir``/<run id>/ (``state.sqlite`` and ``outbox.sqlite``): stop it any way you like, even
``kill -9``, and start it again with the same flags; no epoch is lost or counted twice.

The signing key of the coordinator (it must hold COORDINATOR_ROLE) comes from ``--keystore`` (with
``--password-file`` or ``$HYPERGPU_WALLET_PASSWORD``) or from the environment variable
``$HYPERGPU_COORDINATOR_KEY`` (hex); it is never logged. Other commands: ``export`` (history as CSV).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from agent.cli.entry import run_app
from agent.errors import ConfigError, PortInUseError

if TYPE_CHECKING:  # the heavy imports (web3, hivemind) happen inside the commands that need them
    from eth_account.signers.local import LocalAccount

    from agent.chain.outbox import Outbox
    from agent.protocol.config import RunConfig
    from agent.protocol.reports import ReportDomain
    from coordinator_lite.epochs import ChainSink, EpochSettings
    from coordinator_lite.state import CoordinatorState
    from coordinator_lite.swarm_page import ChainContext

app = typer.Typer(
    name="hypergpu-coordinator",
    help="HyperGPU coordinator_lite: verify contributions, close epochs, post rewards, serve proofs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

log = logging.getLogger("hypergpu.coordinator")

COORDINATOR_KEY_ENV = "HYPERGPU_COORDINATOR_KEY"
DEFAULT_STATE_DIR = Path(".hypergpu/coordinator")


def _parse_wei(value: str, flag: str) -> int:
    try:
        amount = int(value.replace("_", ""))
    except ValueError:
        raise ConfigError(
            f"{flag} {value!r} is not a whole number of wei (e.g. 1000000000000000000)"
        ) from None
    if amount < 0:
        raise ConfigError(f"{flag} must be >= 0 wei, got {amount}")
    return amount


def _coordinator_account(keystore: Path | None, password_file: Path | None) -> LocalAccount:
    import os

    from eth_account import Account

    from agent.chain.wallet import read_password, unlock_wallet

    if keystore is not None:
        return unlock_wallet(keystore.expanduser(), read_password(password_file))
    key = os.environ.get(COORDINATOR_KEY_ENV)
    if not key:
        raise ConfigError(
            f"the coordinator needs a signing key to post on chain: pass --keystore FILE, or set "
            f"{COORDINATOR_KEY_ENV}, or run with --no-chain"
        )
    try:
        return Account.from_key(key.strip())
    except Exception:  # never echo the value: it is a private key
        raise ConfigError(f"{COORDINATOR_KEY_ENV} is not a valid hex private key") from None


def _check_port(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"cannot serve the API on {host}:{port} ({exc.strerror}); stop the other program or pass "
                "another --port"
            ) from None


@app.command()
def run(
    run_id: str = typer.Option(None, help="the run's name (swarm.run_id of its agents)"),
    initial_peers: list[str] = typer.Option(None, "--initial-peers", help="multiaddr of a run peer (repeat)"),
    config: Path | None = typer.Option(None, help="run configuration TOML ([swarm], [chain] sections)"),
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, help="folder for state.sqlite and outbox.sqlite"),
    epoch_length: float = typer.Option(600.0, min=1.0, help="seconds per epoch"),
    pool_wei: str = typer.Option("1000000000000000000", help="reward pool per epoch, wei"),
    strategy: str = typer.Option(
        "proportional", help="proportional | tiered | minimum_guarantee | performance"
    ),
    top_fraction: float = typer.Option(0.1, help="tiered: share of peers that get the bonus"),
    bonus_percent: int = typer.Option(50, help="tiered: bonus on the top peers' weight, percent"),
    guarantee_bps: int = typer.Option(2000, help="minimum_guarantee: pool share split equally, basis points"),
    min_group_size: int | None = typer.Option(None, min=2, help="signatures a group needs (default: config)"),
    no_chain: bool = typer.Option(False, "--no-chain", help="do not post on chain (proofs still served)"),
    network: str | None = typer.Option(None, help="local | monad-testnet | monad"),
    rpc_url: str | None = typer.Option(None, help="JSON-RPC URL (default: the network's)"),
    contract: str | None = typer.Option(None, help="HyperGPUAttestation address"),
    deployment_file: Path | None = typer.Option(None, help="deployment JSON (instead of --contract)"),
    keystore: Path | None = typer.Option(None, help="coordinator wallet keystore"),
    password_file: Path | None = typer.Option(None, help="file holding the keystore password"),
    create_run: bool = typer.Option(False, help="create the run on chain when it does not exist"),
    fund_wei: str = typer.Option("0", help="with --create-run: wei to fund the run's pool with"),
    host: str = typer.Option("127.0.0.1", help="API listen address"),
    port: int = typer.Option(8550, help="API port"),
    dht_host: str = typer.Option("127.0.0.1", help="DHT listen address"),
    dht_port: int = typer.Option(0, help="DHT TCP port; 0 = any free port"),
    poll: float = typer.Option(2.0, min=0.1, help="seconds between checks of the epoch clock"),
    log_level: str = typer.Option("INFO", help="DEBUG | INFO | WARNING | ERROR"),
) -> None:
    """Run the coordinator until Ctrl+C (or SIGTERM)."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from agent.protocol.config import load_run_config
    from coordinator_lite.rewards import Strategy, StrategyOptions
    from coordinator_lite.verification import VerificationPolicy

    chain_overrides = {"network": network, "rpc_url": rpc_url, "attestation_address": contract}
    chain_overrides["deployment_file"] = deployment_file
    overrides = {
        "swarm": {"run_id": run_id, "initial_peers": initial_peers or None},
        "chain": chain_overrides,
    }
    settings_source = load_run_config(config, overrides)
    run_name = settings_source.swarm.run_id
    try:
        chosen = Strategy(strategy)
        options = StrategyOptions(top_fraction, bonus_percent, guarantee_bps)
    except ValueError as exc:
        allowed = ", ".join(s.value for s in Strategy)
        raise ConfigError(f"invalid reward strategy settings: {exc} (strategies: {allowed})") from None
    _check_port(host, port)

    from coordinator_lite.epochs import EpochSettings

    settings = EpochSettings(
        run_id=run_name,
        epoch_length_s=epoch_length,
        pool_wei_per_epoch=_parse_wei(pool_wei, "--pool-wei"),
        strategy=chosen,
        strategy_options=options,
        policy=VerificationPolicy(min_group_size=min_group_size or settings_source.swarm.min_group_size),
    )
    chain_options = ChainOptions(
        enabled=not no_chain,
        keystore=keystore,
        password_file=password_file,
        create_run=create_run,
        fund_wei=_parse_wei(fund_wei, "--fund-wei"),
    )
    folder = state_dir.expanduser() / run_name
    _serve(settings, settings_source, folder, chain_options, (host, port), (dht_host, dht_port), poll)


@dataclass(frozen=True)
class ChainOptions:
    """The chain-related flags of ``run``: whether to post, the coordinator's key, run creation."""

    enabled: bool
    keystore: Path | None
    password_file: Path | None
    create_run: bool
    fund_wei: int


def _serve(
    settings: EpochSettings,
    config: RunConfig,
    folder: Path,
    chain_options: ChainOptions,
    api_address: tuple[str, int],
    dht_address: tuple[str, int],
    poll: float,
) -> None:
    import uvicorn

    from agent.chain.client import ChainUnreachableError
    from agent.protocol.reports import OFFCHAIN_DOMAIN
    from agent.swarm.dht_node import DhtOptions, start_dht, visible_maddrs
    from coordinator_lite.api import create_app
    from coordinator_lite.dht_source import DhtEvidenceSource
    from coordinator_lite.epochs import EpochCloser
    from coordinator_lite.state import CoordinatorState

    chain = None
    outbox = None
    domain = OFFCHAIN_DOMAIN
    if chain_options.enabled:
        chain, outbox, domain = _connect_chain(settings, config, folder, chain_options)
    state = CoordinatorState(folder / "state.sqlite", settings.run_id)
    host, port = api_address
    dht = start_dht(
        DhtOptions(host=dht_address[0], port=dht_address[1], initial_peers=tuple(config.swarm.initial_peers))
    )
    log.info("DHT up; agents may also use it as an initial peer: %s", " ".join(visible_maddrs(dht)))
    closer = EpochCloser(state, settings, domain, DhtEvidenceSource(dht, settings.run_id), chain=chain)
    if outbox is not None:
        outbox.on_finished = closer.on_outbox_finished
    stop = threading.Event()
    page_chain = None if chain is None else _page_chain(chain, config, state)
    api_app = create_app(state, proofs_need_chain=chain is not None, chain=page_chain)
    server = uvicorn.Server(uvicorn.Config(api_app, host=host, port=port, log_level="warning"))
    api = threading.Thread(target=server.run, name="coordinator-api", daemon=True)

    def request_stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        closer.resume()
        if outbox is not None:
            outbox.start()
        api.start()
        log.info(
            "coordinating run %r: epochs of %.0f s, %d wei each, strategy %s; proofs on http://%s:%d",
            settings.run_id, settings.epoch_length_s, settings.pool_wei_per_epoch, settings.strategy.value,
            host, port,
        )  # fmt: skip
        while not stop.is_set():
            try:
                closer.step()
            except ChainUnreachableError as exc:  # nothing was committed: the same close is retried
                log.warning("epoch close postponed, the chain is unreachable: %s", exc)
                stop.wait(max(poll, 5.0))
                continue
            stop.wait(max(0.1, min(poll, closer.next_deadline() - time.time())))
    finally:
        server.should_exit = True
        if outbox is not None:
            outbox.stop()
        api.join(timeout=5)
        dht.shutdown()
        state.close()


def _page_chain(chain: ChainSink, config: RunConfig, state: CoordinatorState) -> ChainContext:
    """The chain as the swarm page sees it; its on-chain check reads events from the deployment block
    when the deployment file is known, else from this coordinator's earliest mined transaction."""
    from agent.chain.deploy import Deployment
    from coordinator_lite.onchain_check import OnchainLedgerReader
    from coordinator_lite.swarm_page import ChainContext

    attestation = chain.attestation
    from_block = None
    if config.chain.deployment_file is not None:
        deployment = Deployment.load(config.chain.deployment_file)
        if deployment.address.lower() == attestation.address.lower():
            from_block = deployment.block

    def earliest_tx_block() -> int | None:
        blocks = [int(str(tx["block_number"])) for tx in state.txs() if tx["block_number"] is not None]
        return min(blocks) if blocks else None

    reader = OnchainLedgerReader(
        attestation, chain.run_id, from_block=from_block, default_from_block=earliest_tx_block
    )
    client = attestation.client
    return ChainContext(
        network=config.chain.network.value,
        chain_id=client.chain_id,
        contract=attestation.address,
        explorer_link=client.explorer_link,
        reader=reader,
    )


def _connect_chain(
    settings: EpochSettings, config: RunConfig, folder: Path, options: ChainOptions
) -> tuple[ChainSink, Outbox, ReportDomain]:
    """Connect, check the role and the run, and open the outbox; raises ConfigError with what to fix."""
    from agent.chain.attestation import Attestation, RunStatus, run_id_hash
    from agent.chain.client import ChainClient
    from agent.chain.deploy import Deployment
    from agent.chain.outbox import Outbox
    from agent.protocol.reports import ReportDomain
    from coordinator_lite.epochs import ChainSink

    chain_config = config.chain
    address = chain_config.attestation_address
    if address is None and chain_config.deployment_file is not None:
        address = Deployment.load(chain_config.deployment_file).address
    if address is None:
        raise ConfigError(
            "no contract address: pass --contract 0x... or --deployment-file FILE (or run with --no-chain)"
        )
    account = _coordinator_account(options.keystore, options.password_file)
    client = ChainClient.from_config(chain_config, account)
    attestation = Attestation(client, address)
    if not attestation.is_coordinator(account.address):
        raise ConfigError(
            f"{account.address} does not hold COORDINATOR_ROLE on {address}; ask the contract admin to "
            "grant it"
        )
    domain = ReportDomain(chain_id=client.chain_id, verifying_contract=address)
    checks = ChainSink.outbox_checks(attestation, settings.run_id)
    run_key = run_id_hash(settings.run_id)
    checks["create_run"] = lambda _entry: attestation.get_run(run_key).status != RunStatus.NONE
    outbox = Outbox(folder / "outbox.sqlite", client, already_done=checks)
    status = attestation.get_run(run_key).status
    if status == RunStatus.NONE:
        if not options.create_run:
            raise ConfigError(
                f"run {settings.run_id!r} does not exist on chain at {address}; start with --create-run "
                "(and --fund-wei N) or create it first"
            )
        now = int(time.time())
        call = attestation.create_run_call(
            run_key,
            model_hash=run_id_hash(config.training.model),
            dataset_id=run_id_hash(config.training.dataset),
            start_time=now,
            end_time=now + 365 * 86400,
            pool_wei=options.fund_wei,
        )
        outbox.enqueue(f"create:{settings.run_id}", call.to, call.data, "create_run", value_wei=call.value)
    elif status != RunStatus.ACTIVE:
        raise ConfigError(
            f"run {settings.run_id!r} is {status.name.lower()} on chain; nothing more can be posted"
        )
    return ChainSink(attestation, outbox, settings.run_id), outbox, domain


@app.command("export")
def export(
    run_id: str = typer.Option(..., help="the run's name"),
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, help="the coordinator's --state-dir"),
    out: Path = typer.Option(..., help="CSV file to write"),
) -> None:
    """Write the reward history (one row per agent per epoch) as CSV."""
    from coordinator_lite.state import CoordinatorState

    database = state_dir.expanduser() / run_id / "state.sqlite"
    if not database.exists():
        raise ConfigError(
            f"no coordinator state for run {run_id!r} in {state_dir}; check --state-dir and --run-id"
        )
    state = CoordinatorState(database, run_id)
    try:
        with out.open("w", newline="") as handle:
            rows = state.export_history_csv(handle)
    finally:
        state.close()
    typer.echo(f"wrote {rows} rows to {out}")


def main() -> None:
    """Entry point of the ``hypergpu-coordinator`` console script: one clear line per user error."""
    run_app(app)


if __name__ == "__main__":
    main()
