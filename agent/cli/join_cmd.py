"""``hypergpu join`` and ``hypergpu bootstrap``: run one agent (or a DHT-only bootstrap peer) on this host."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from agent.logging_setup import setup_logging
from agent.protocol.config import RunConfig, load_run_config

log = logging.getLogger("hypergpu.cli")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML run configuration")]


def build_config(
    config: Path | None,
    *,
    run_id: str | None = None,
    initial_peers: list[str] | None = None,
    host: str | None = None,
    port: int | None = None,
    model: str | None = None,
    dataset: str | None = None,
    data_dir: Path | None = None,
    batch_size: int | None = None,
    local_steps: int | None = None,
    learning_rate: float | None = None,
    target_accuracy: float | None = None,
    epochs: float | None = None,
    expected_agents: int | None = None,
    target_group_size: int | None = None,
    log_level: str | None = None,
    log_file: Path | None = None,
) -> RunConfig:
    """The run configuration from FILE < HYPERGPU_* environment < these flags (unset flags are ignored)."""
    overrides = {
        "training": {
            "model": model,
            "dataset": dataset,
            "data_dir": str(data_dir) if data_dir else None,
            "batch_size": batch_size,
            "local_steps": local_steps,
            "learning_rate": learning_rate,
            "target_accuracy": target_accuracy,
            "epochs": epochs,
        },
        "swarm": {
            "run_id": run_id,
            "initial_peers": initial_peers or None,
            "host": host,
            "port": port,
            "expected_agents": expected_agents,
            "target_group_size": target_group_size,
        },
        "log": {"level": log_level, "file": str(log_file) if log_file else None},
    }
    return load_run_config(config, overrides)


def join(
    config: ConfigOpt = None,
    initial_peers: Annotated[
        list[str] | None,
        typer.Option("--initial-peers", "-p", help="multiaddr of a peer in the run (repeatable)"),
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="training run to join")] = None,
    host: Annotated[str | None, typer.Option(help="IP to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port to listen on (0 = any)")] = None,
    model: Annotated[str | None, typer.Option(help="model name (mlp, cnn-small, cnn, resnet-small)")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset name (mnist, cifar10, synthetic)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="folder with the dataset files")] = None,
    batch_size: Annotated[int | None, typer.Option(help="local batch size")] = None,
    local_steps: Annotated[int | None, typer.Option(help="local steps between averaging rounds")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="learning rate")] = None,
    target_accuracy: Annotated[
        float | None, typer.Option(help="stop when the swarm reaches this accuracy")
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="stop after this many passes over the shard")] = None,
    expected_agents: Annotated[
        int | None, typer.Option(help="wait for this many agents before training")
    ] = None,
    target_group_size: Annotated[int | None, typer.Option(help="peers per averaging group")] = None,
    workdir: Annotated[Path, typer.Option(help="identity, checkpoints, status and log")] = Path(
        ".hypergpu/agent"
    ),
    resume: Annotated[
        bool, typer.Option("--resume", help="continue from the checkpoint in --workdir")
    ] = False,
    max_seconds: Annotated[float | None, typer.Option(help="stop after this much training time")] = None,
    announce_host: Annotated[
        str | None, typer.Option(help="address peers should dial, if not --host")
    ] = None,
    announce_port: Annotated[int | None, typer.Option(help="port peers should dial, if not --port")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads for this agent")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = None,
    no_tui: Annotated[bool, typer.Option("--no-tui", help="plain logs instead of the terminal UI")] = False,
    web_host: Annotated[str, typer.Option(help="status page address")] = "127.0.0.1",
    web_port: Annotated[int | None, typer.Option(help="status page port (none = no page)")] = None,
    keystore: Annotated[
        Path | None,
        typer.Option(help="wallet keystore; signed contribution reports need one (hypergpu wallet new)"),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(help="file whose first line is the wallet password (or HYPERGPU_WALLET_PASSWORD)"),
    ] = None,
    action_token: Annotated[
        str | None,
        typer.Option(envvar="HYPERGPU_ACTION_TOKEN", help="token that allows pause/claim on the web API"),
    ] = None,
) -> None:
    """Join a training run: train this host's shard and average with peers until the target or Ctrl+C."""
    from agent.swarm.node import AgentNode, NodeOptions

    run_config = build_config(
        config,
        run_id=run_id,
        initial_peers=initial_peers,
        host=host,
        port=port,
        model=model,
        dataset=dataset,
        data_dir=data_dir,
        batch_size=batch_size,
        local_steps=local_steps,
        learning_rate=lr,
        target_accuracy=target_accuracy,
        epochs=epochs,
        expected_agents=expected_agents,
        target_group_size=target_group_size,
        log_level=log_level,
        log_file=workdir / "agent.log",
    )
    use_tui = not no_tui and sys.stdout.isatty()
    setup_logging(
        run_config.log.level,
        run_config.log.file,
        console=not use_tui,
        max_bytes=run_config.log.max_bytes,
        backups=run_config.log.backups,
    )
    node = AgentNode(
        run_config,
        NodeOptions(
            workdir=workdir,
            resume=resume,
            max_seconds=max_seconds,
            announce_host=announce_host,
            announce_port=announce_port,
            torch_threads=threads,
            keystore=keystore,
            password_file=password_file,
        ),
    )
    _install_stop_handlers(node)
    web = _maybe_start_web(node, web_host, web_port, action_token)
    try:
        if use_tui:
            _run_with_tui(node)
        else:
            summary = node.run()
            log.info("agent finished: %s", summary["stop_reason"])
    finally:
        if web is not None:
            web.stop()


def _install_stop_handlers(node: object) -> None:
    """Ctrl+C / SIGTERM: finish the current batch, checkpoint, leave the swarm (a second Ctrl+C forces)."""

    def handle(signum: int, _frame: object) -> None:
        if getattr(node, "_stop").is_set():  # noqa: B009 - second signal: give up waiting
            raise KeyboardInterrupt
        log.warning("signal %d: stopping after the current batch (press Ctrl+C again to force)", signum)
        node.request_stop("stopped by signal")  # type: ignore[attr-defined]

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def _maybe_start_web(node: object, host: str, port: int | None, token: str | None) -> object | None:
    if port is None:
        return None
    try:
        from agent.faces.web import create_app, serve_in_thread
    except ImportError:
        log.warning("web page not available in this build")
        return None
    app = create_app(node.board, action_token=token, actions=node)  # type: ignore[attr-defined]
    handle = serve_in_thread(app, host=host, port=port)
    node.board.update(web_url=handle.url)  # type: ignore[attr-defined]  # the real port, also for --web-port 0
    log.info("status page: %s", handle.url)
    return handle


def _run_with_tui(node: object) -> None:
    try:
        from agent.faces.tui import AgentTui
    except ImportError:
        node.run()  # type: ignore[attr-defined]
        return
    errors: list[BaseException] = []

    def train() -> None:
        try:
            node.run()  # type: ignore[attr-defined]
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=train, name="training", daemon=True)
    worker.start()
    tui = AgentTui(node.board, actions=node, on_quit=lambda: node.request_stop("quit from the TUI"))  # type: ignore[attr-defined]
    tui.run()
    node.request_stop("quit from the TUI")  # type: ignore[attr-defined]
    worker.join()
    if errors:
        raise errors[0]


def bootstrap(
    host: Annotated[str, typer.Option(help="IP to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 = any)")] = 0,
    address_file: Annotated[
        Path | None, typer.Option(help="write the peer's multiaddrs here as JSON")
    ] = None,
    identity: Annotated[Path | None, typer.Option(help="libp2p key file, for a stable address")] = None,
) -> None:
    """Run a DHT-only bootstrap peer that new agents can use as --initial-peers (Ctrl+C stops it)."""
    from agent.swarm.dht_node import DhtOptions, start_dht, visible_maddrs

    setup_logging("INFO", None)
    dht = start_dht(DhtOptions(host=host, port=port, identity_path=identity))
    addresses = visible_maddrs(dht)
    if address_file is not None:
        tmp = address_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(addresses))
        tmp.replace(address_file)
    typer.echo("bootstrap peer ready; agents can join with:")
    for address in addresses:
        typer.echo(f"  hypergpu join --initial-peers {address}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        time.sleep(0.2)
    dht.shutdown()
