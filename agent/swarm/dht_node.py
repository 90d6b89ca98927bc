"""Starting this agent's hivemind DHT node, with errors a user can act on."""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

import hivemind
from hivemind.utils.multiaddr import Multiaddr

from agent.errors import BootstrapError, ConfigError, PortInUseError
from agent.swarm.orphans import children_die_with_this_process

log = logging.getLogger("hypergpu.dht")


@dataclass(frozen=True)
class DhtOptions:
    """Where the DHT listens and whom it asks first.

    Args:
        host: IPv4 address to listen on (127.0.0.1 by default; 0.0.0.0 to accept peers from the internet).
        port: TCP port, 0 for any free port.
        initial_peers: multiaddrs of peers already in the run (with /p2p/<peer id>).
        announce_host, announce_port: the address others should dial, when it differs from the listen one
            (a NAT's public address, or the network-emulation proxy of a local swarm).
        identity_path: file holding this agent's libp2p private key, so its peer id survives restarts.
    """

    host: str = "127.0.0.1"
    port: int = 0
    initial_peers: tuple[str, ...] = ()
    announce_host: str | None = None
    announce_port: int | None = None
    identity_path: Path | None = None


def _check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on {host} is already in use; stop the other program or pass --port 0 "
                    "to pick a free port"
                ) from exc
            raise PortInUseError(f"cannot listen on {host}:{port} ({exc.strerror}); check --host") from exc


def _validate_peers(peers: tuple[str, ...]) -> None:
    for peer in peers:
        try:
            address = Multiaddr(peer)
        except Exception as exc:
            raise ConfigError(
                f"initial peer {peer!r} is not a multiaddr; expected e.g. /ip4/1.2.3.4/tcp/31337/p2p/Qm..."
            ) from exc
        if "/p2p/" not in str(address):
            raise ConfigError(
                f"initial peer {peer!r} lacks /p2p/<peer id>; copy the full address the peer prints"
            )


def start_dht(options: DhtOptions) -> hivemind.DHT:
    """Start a DHT node and connect it to ``options.initial_peers``.

    Raises:
        PortInUseError: the listen port is taken.
        ConfigError: an initial peer is not a valid multiaddr.
        BootstrapError: none of the initial peers answered.
    """
    _check_port_free(options.host, options.port)
    _validate_peers(options.initial_peers)
    children_die_with_this_process()  # no orphaned DHT process or p2pd holding the port after a SIGKILL
    kwargs: dict[str, object] = {"host_maddrs": [f"/ip4/{options.host}/tcp/{options.port}"]}
    if options.announce_host is not None:
        kwargs["announce_maddrs"] = [
            f"/ip4/{options.announce_host}/tcp/{options.announce_port or options.port}"
        ]
    if options.identity_path is not None:
        options.identity_path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["identity_path"] = str(options.identity_path)
    try:
        dht = hivemind.DHT(initial_peers=list(options.initial_peers), start=True, **kwargs)
    except Exception as exc:
        log.debug("DHT start failed", exc_info=True)
        text = str(exc)
        if options.initial_peers and ("bootstrap" in text.lower() or "connect" in text.lower() or not text):
            raise BootstrapError(
                f"could not reach any initial peer ({', '.join(options.initial_peers)}): "
                f"{text or type(exc).__name__}. "
                "Check that the address is right, that the peer is running, and that its port is reachable."
            ) from exc
        if "address already in use" in text.lower():
            raise PortInUseError(
                f"port {options.port} is already in use; pass --port 0 for a free port"
            ) from exc
        raise BootstrapError(f"the hivemind DHT could not start: {text or type(exc).__name__}") from exc
    return dht


def visible_maddrs(dht: hivemind.DHT) -> list[str]:
    """Addresses other peers can use as ``--initial-peers`` to reach this node."""
    return [str(addr) for addr in dht.get_visible_maddrs()]
