"""The shaping layer: a TCP proxy in front of every agent that applies the scenario's links to real traffic.

Run it as its own process (keeps its event loop out of the agents' GIL on small machines)::

    python -m agent.network.shaper --scenario regions3 --agents 8 --ports-file run/netem.json

or, the same, ``hypergpu netem serve --scenario regions3 --agents 8 --ports-file run/netem.json``.

Addressing (see README.md in this package): agent ``i`` really listens on ``127.0.0.(10+i):P_i`` and
announces ``127.0.1.(10+i):P_i``, where this proxy listens. go-libp2p dials from its listen address,
so a connection from agent ``j`` arrives from ``127.0.0.(10+j)``: the proxy of agent ``i`` knows the
pair and applies ``link(j, i)`` to both directions. A source it does not know gets the scenario's
``default`` profile.

Per connection: a new connection pays the TCP handshake (the dialer's first byte leaves one RTT after
connect, so a first exchange takes two RTTs, as on a real link); each direction is a
:class:`agent.network.pipe.ShapedPipe` (delay queue, bandwidth via a token bucket per pair and
direction, loss stalls and resets). Partitions hold bytes in flight until the heal (plus one RTO) and
reset new connections; disconnects reset every connection of the agent and refuse new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import random
import socket
import struct
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from agent.errors import ConfigError, PortInUseError
from agent.network.conditions import NetworkConditions, PeerIndex
from agent.network.events import NetworkEvent
from agent.network.pipe import ConnectionResetByLink, PipeEnds, ShapedPipe, WakeupCalibration
from agent.network.scenario import Scenario
from agent.network.token_bucket import TokenBucket

log = logging.getLogger("hypergpu.netem")

DEFAULT_LISTEN_PREFIX = "127.0.0."
DEFAULT_ANNOUNCE_PREFIX = "127.0.1."
DEFAULT_FIRST_HOST = 10
DEFAULT_MAX_IN_FLIGHT_BYTES = 4 * 1024 * 1024


class AgentAddressing(BaseModel):
    """Where agent ``index`` listens for real and what it announces (the proxy in front of it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    listen_host: str
    listen_port: int
    announce_host: str
    announce_port: int

    @property
    def host_maddr(self) -> str:
        """The multiaddr for hivemind's ``host_maddrs`` (the agent's real listen address)."""
        return f"/ip4/{self.listen_host}/tcp/{self.listen_port}"

    @property
    def announce_maddr(self) -> str:
        """The multiaddr for hivemind's ``announce_maddrs`` (this agent's proxy)."""
        return f"/ip4/{self.announce_host}/tcp/{self.announce_port}"


class PairStats(BaseModel):
    """Traffic between a dialer and a listener through the listener's proxy. Bytes as delivered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dialer: int | None
    listener: int
    bytes_to_listener: int
    bytes_to_dialer: int
    connections: int
    open_connections: int
    refused: int
    resets: int
    stalls: int
    black_holes: int


@dataclass
class _PairTotals:
    bytes_to_listener: int = 0
    bytes_to_dialer: int = 0
    connections: int = 0
    open_connections: int = 0
    refused: int = 0
    resets: int = 0
    stalls: int = 0
    black_holes: int = 0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), so the peer sees ECONNRESET as after a real reset."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One proxied connection: dialer <-> proxy <-> agent, with a shaped pipe per direction."""

    def __init__(self, dialer: PeerIndex, listener: int, client: PipeEnds, upstream: PipeEnds) -> None:
        self.dialer = dialer
        self.listener = listener
        self.client = client
        self.upstream = upstream
        self.task: asyncio.Task[None] | None = None
        self.pipes: list[ShapedPipe] = []

    def reset(self) -> None:
        for writer in (self.client.writer, self.upstream.writer):
            _reset(writer)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


class ShapingLayer:
    """Shaping proxies for a swarm of ``agent_count`` agents under ``scenario``.

    Args:
        scenario: links, agent profiles and timed events.
        agent_count: number of agents; ``None`` takes the scenario's.
        base_port: agent ``i`` uses port ``base_port + i`` (listen and announce); ``None`` picks free ports.
        listen_prefix, announce_prefix, first_host: agent ``i`` listens on
            ``f"{listen_prefix}{first_host + i}"`` and announces ``f"{announce_prefix}{first_host + i}"``.
        max_in_flight_bytes: per connection and direction, bytes the proxy holds before it stops
            reading (the emulated network's buffer; the sender then feels TCP back-pressure).
        connect_timeout_s: give up connecting to an agent's real address after this long.
    """

    def __init__(
        self,
        scenario: Scenario,
        agent_count: int | None = None,
        *,
        base_port: int | None = None,
        listen_prefix: str = DEFAULT_LISTEN_PREFIX,
        announce_prefix: str = DEFAULT_ANNOUNCE_PREFIX,
        first_host: int = DEFAULT_FIRST_HOST,
        max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.scenario = scenario
        self.agent_count = scenario.agent_count(agent_count)
        if first_host < 1 or first_host + self.agent_count - 1 > 254:
            raise ConfigError(
                f"{self.agent_count} agents from host number {first_host} do not fit in one /24 of 127/8; "
                "use fewer agents or a lower first_host"
            )
        if base_port is not None and not 1024 <= base_port <= 65535 - self.agent_count:
            raise ConfigError(
                f"base_port {base_port} must leave room for {self.agent_count} ports below 65536"
            )
        self.conditions = NetworkConditions(scenario, self.agent_count)
        self._base_port = base_port
        self._listen_prefix = listen_prefix
        self._announce_prefix = announce_prefix
        self._first_host = first_host
        self._max_in_flight = max_in_flight_bytes
        self._connect_timeout = connect_timeout_s
        self._index_by_host = {self._host(listen_prefix, first_host + i): i for i in range(self.agent_count)}
        self._addressing: list[AgentAddressing] = []
        self._servers: list[asyncio.Server] = []
        self._connections: set[_Connection] = set()
        self._totals: dict[tuple[PeerIndex, int], _PairTotals] = {}
        self._buckets: dict[tuple[PeerIndex, PeerIndex], TokenBucket] = {}
        self._timers: list[asyncio.TimerHandle] = []
        self._changed_future: asyncio.Future[None] | None = None
        self._wakeup = WakeupCalibration()
        self._serial = itertools.count()
        self._origin = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on every agent's announce address and schedule the scenario's timed events."""
        self._loop = asyncio.get_running_loop()
        self._origin = self._loop.time()
        try:
            for index in range(self.agent_count):
                await self._listen(index)
        except BaseException:
            await self.stop()
            raise
        for event in self.scenario.timed_events(self.agent_count):
            self.apply_event(event)
        log.info("shaping %d agents under scenario %r", self.agent_count, self.scenario.name)

    async def stop(self) -> None:
        """Stop listening, reset every proxied connection and cancel pending events."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            connection.reset()
        tasks = [c.task for c in self._connections if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)
        self._servers.clear()

    async def __aenter__(self) -> ShapingLayer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---- addressing ---------------------------------------------------------------------------------
    @staticmethod
    def _host(prefix: str, number: int) -> str:
        return f"{prefix}{number}"

    def addressing(self, index: int) -> AgentAddressing:
        """Listen and announce address of agent ``index`` (after :meth:`start`)."""
        if not 0 <= index < len(self._addressing):
            raise IndexError(
                f"agent {index} is not shaped here (agents 0..{len(self._addressing) - 1}; started?)"
            )
        return self._addressing[index]

    def addressing_table(self) -> list[AgentAddressing]:
        """Every agent's addressing, by index."""
        return list(self._addressing)

    def agent_of(self, host: str) -> PeerIndex:
        """The agent whose real listen address is ``host``, or ``None`` for an unknown source."""
        return self._index_by_host.get(host)

    async def _listen(self, index: int) -> None:
        listen_host = self._host(self._listen_prefix, self._first_host + index)
        announce_host = self._host(self._announce_prefix, self._first_host + index)
        port = 0 if self._base_port is None else self._base_port + index

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._accept(index, reader, writer)

        for _attempt in range(20):
            try:
                server = await asyncio.start_server(
                    handle, announce_host, port, reuse_address=True, backlog=512
                )
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUseError(
                        f"port {port} on {announce_host} (proxy of agent {index}) is in use; "
                        "pick another --base-port or leave it out for free ports"
                    ) from exc
                raise PortInUseError(f"cannot listen on {announce_host}:{port}: {exc.strerror}") from exc
            chosen = server.sockets[0].getsockname()[1]
            if port or _port_free(listen_host, chosen):
                break
            server.close()  # the agent could not bind its real address on this port: try another
        else:
            raise PortInUseError(f"found no port free on both {announce_host} and {listen_host}")
        if port and not _port_free(listen_host, port):
            server.close()
            raise PortInUseError(
                f"port {port} on {listen_host} (agent {index}'s real address) is in use; "
                "pick another --base-port or leave it out for free ports"
            )
        self._servers.append(server)
        self._addressing.append(
            AgentAddressing(
                index=index,
                listen_host=listen_host,
                listen_port=chosen,
                announce_host=announce_host,
                announce_port=chosen,
            )
        )

    # ---- events -------------------------------------------------------------------------------------
    def apply_event(self, event: NetworkEvent) -> None:
        """Put ``event`` in force: now, or at its ``at_s`` if that is still ahead.

        ``at_round`` events are applied now: the launcher calls this when its agents reach the round.
        """
        loop = self._require_loop()
        if event.at_s is not None and self._origin + event.at_s > loop.time():
            self._timers.append(loop.call_at(self._origin + event.at_s, self._apply_now, event))
            return
        self._apply_now(event)

    def _apply_now(self, event: NetworkEvent) -> None:
        loop = self._require_loop()
        effect = self.conditions.apply(event, loop.time() - self._origin)
        log.info("network event %s", event.model_dump_json(exclude_none=True))
        if effect is not None and effect.ends_at_s is not None:
            self._timers.append(loop.call_at(self._origin + effect.ends_at_s, self._expire, effect.effect_id))
        for connection in list(self._connections):
            if self.conditions.is_disconnected(connection.dialer, connection.listener):
                self._totals_for(connection.dialer, connection.listener).resets += 1
                connection.reset()
        self._notify_changed()

    def _expire(self, effect_id: int) -> None:
        if self.conditions.expire(effect_id):
            log.info("network effect %d ended", effect_id)
            self._notify_changed()

    def _notify_changed(self) -> None:
        if self._changed_future is not None and not self._changed_future.done():
            self._changed_future.set_result(None)
        self._changed_future = None

    def _changed(self) -> asyncio.Future[None]:
        if self._changed_future is None:
            self._changed_future = self._require_loop().create_future()
        return self._changed_future

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("ShapingLayer.start() has not been awaited")
        return self._loop

    # ---- stats --------------------------------------------------------------------------------------
    def _totals_for(self, dialer: PeerIndex, listener: int) -> _PairTotals:
        return self._totals.setdefault((dialer, listener), _PairTotals())

    @property
    def timer_lateness_ms(self) -> float:
        """How late this process wakes from timers, ms (learned; the pipes aim this much early)."""
        return self._wakeup.early_s * 1000.0

    def stats(self) -> list[PairStats]:
        """Bytes, connections, resets and stalls per (dialer, listener) pair, live connections included."""
        live: dict[tuple[PeerIndex, int], _PairTotals] = {}
        for connection in self._connections:
            extra = live.setdefault((connection.dialer, connection.listener), _PairTotals())
            if len(connection.pipes) == 2:
                up, down = connection.pipes
                extra.bytes_to_listener += up.counters.bytes_delivered
                extra.bytes_to_dialer += down.counters.bytes_delivered
                extra.stalls += up.counters.stalls + down.counters.stalls
                extra.black_holes += up.counters.black_holes + down.counters.black_holes
        rows = []
        for key in sorted(set(self._totals) | set(live), key=lambda k: (k[1], -1 if k[0] is None else k[0])):
            done = self._totals.get(key, _PairTotals())
            now = live.get(key, _PairTotals())
            rows.append(
                PairStats(
                    dialer=key[0],
                    listener=key[1],
                    bytes_to_listener=done.bytes_to_listener + now.bytes_to_listener,
                    bytes_to_dialer=done.bytes_to_dialer + now.bytes_to_dialer,
                    connections=done.connections,
                    open_connections=done.open_connections,
                    refused=done.refused,
                    resets=done.resets,
                    stalls=done.stalls + now.stalls,
                    black_holes=done.black_holes + now.black_holes,
                )
            )
        return rows

    # ---- connections --------------------------------------------------------------------------------
    def _bucket(self, sender: PeerIndex, receiver: PeerIndex) -> TokenBucket | None:
        rate = self.conditions.profile(sender, receiver).bytes_per_second
        if rate is None:
            return None
        bucket = self._buckets.get((sender, receiver))
        if bucket is None or bucket.rate != rate:
            # a 5 ms bucket: small enough that measured rates match the cap over short transfers
            bucket = TokenBucket(rate, burst_bytes=max(4096.0, rate * 0.005))
            self._buckets[(sender, receiver)] = bucket
        return bucket

    async def _accept(
        self, listener: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = self._require_loop()
        accepted_at = loop.time()
        peer = writer.get_extra_info("peername")
        dialer = self.agent_of(peer[0]) if peer else None
        totals = self._totals_for(dialer, listener)
        if self.conditions.is_blocked(dialer, listener):
            totals.refused += 1
            _reset(writer)
            return
        address = self._addressing[listener]
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(address.listen_host, address.listen_port), self._connect_timeout
            )
        except (OSError, TimeoutError):
            totals.refused += 1
            _reset(writer)
            return
        connection = _Connection(dialer, listener, PipeEnds(reader, writer), PipeEnds(up_reader, up_writer))
        # The pipes run in a task of our own: cancelling the stream server's handler task itself trips
        # Python 3.11's start_server callback (task.exception() on a cancelled task).
        connection.task = asyncio.create_task(self._relay(connection, accepted_at, totals))
        with contextlib.suppress(asyncio.CancelledError):
            await connection.task

    async def _relay(self, connection: _Connection, accepted_at: float, totals: _PairTotals) -> None:
        dialer, listener = connection.dialer, connection.listener
        reader, writer = connection.client.reader, connection.client.writer
        up_reader, up_writer = connection.upstream.reader, connection.upstream.writer
        rtt_s = self.conditions.rtt_ms(dialer, listener, accepted_at - self._origin) / 1000.0
        seed = f"{self.scenario.seed}/{dialer}/{listener}/{next(self._serial)}"
        common = {
            "conditions": self.conditions,
            "rng": random.Random(seed),
            "clock_origin": self._origin,
            "max_in_flight_bytes": self._max_in_flight,
            "changed": self._changed,
            "wakeup": self._wakeup,
        }
        up = ShapedPipe(
            sender=dialer,
            receiver=listener,
            ends=PipeEnds(reader, up_writer),
            bucket=lambda: self._bucket(dialer, listener),
            not_before=accepted_at + rtt_s,
            **common,  # type: ignore[arg-type]
        )
        down = ShapedPipe(
            sender=listener,
            receiver=dialer,
            ends=PipeEnds(up_reader, writer),
            bucket=lambda: self._bucket(listener, dialer),
            not_before=accepted_at + 1.5 * rtt_s,
            **common,  # type: ignore[arg-type]
        )
        connection.pipes = [up, down]
        totals.connections += 1
        totals.open_connections += 1
        self._connections.add(connection)
        try:
            async with asyncio.TaskGroup() as group:
                for pipe in (up, down):
                    group.create_task(pipe.read_side())
                    group.create_task(pipe.write_side())
        except* ConnectionResetByLink:
            totals.resets += 1
            connection.reset()
        except* (ConnectionError, OSError):
            connection.reset()  # one side reset or vanished: pass the reset on to the other
        finally:
            self._connections.discard(connection)
            totals.open_connections -= 1
            totals.bytes_to_listener += up.counters.bytes_delivered
            totals.bytes_to_dialer += down.counters.bytes_delivered
            totals.stalls += up.counters.stalls + down.counters.stalls
            totals.black_holes += up.counters.black_holes + down.counters.black_holes
            for end in (writer, up_writer):
                if not end.is_closing():
                    end.close()


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    from agent.network.serve import main

    main()
