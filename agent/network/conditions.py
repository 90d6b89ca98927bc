"""The live state of every emulated link: a scenario's static links plus the events in force.

Pure bookkeeping with the clock passed in (seconds since the shaper started), so it is tested without
sockets; :mod:`agent.network.shaper` owns one instance and asks it about a pair on every chunk.
An agent index of ``None`` stands for a peer the shaper could not identify (it gets the scenario's
``default`` profile and is outside every agent set).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from agent.network.events import (
    DegradeEvent,
    DisconnectEvent,
    LatencySpikeEvent,
    NetworkEvent,
    PartitionEvent,
    RestoreEvent,
)
from agent.network.profiles import LinkProfile, worse
from agent.network.scenario import Scenario

PeerIndex = int | None


@dataclass(frozen=True)
class ActiveEffect:
    """An event in force: ``ends_at_s`` is seconds since start, ``None`` = until restored."""

    effect_id: int
    event: NetworkEvent
    started_at_s: float
    ends_at_s: float | None


def pair_key(first: PeerIndex, second: PeerIndex) -> tuple[int, int]:
    """The unordered pair as a sortable key (an unknown peer is -1)."""
    a = -1 if first is None else first
    b = -1 if second is None else second
    return (a, b) if a <= b else (b, a)


def _unit_draw(seed: int, key: tuple[int, int], epoch: int) -> float:
    # A string seed goes through SHA-512 in random.Random, so draws do not depend on PYTHONHASHSEED
    # and the check process computes the same RTTs as the shaper process.
    return random.Random(f"hypergpu-netem/{seed}/{key[0]}/{key[1]}/{epoch}").random()


class NetworkConditions:
    """Effective profile, RTT, partition and disconnect state of every pair, as events come and go.

    Args:
        scenario: the static links and the seed of the RTT draws.
        agent_count: number of agents (indices ``0 .. agent_count - 1``).
    """

    def __init__(self, scenario: Scenario, agent_count: int) -> None:
        self.scenario = scenario
        self.agent_count = agent_count
        self.version = 0
        """Incremented on every change, so callers can cache what they derive."""
        self._effects: dict[int, ActiveEffect] = {}
        self._ids = itertools.count(1)
        self._profile_cache: dict[tuple[int, int], LinkProfile] = {}

    # ---- events -------------------------------------------------------------------------------------
    def apply(self, event: NetworkEvent, now_s: float) -> ActiveEffect | None:
        """Put ``event`` in force at ``now_s``; a ``restore`` ends effects and returns ``None``."""
        if isinstance(event, RestoreEvent):
            for effect in list(self._effects.values()):
                agents = getattr(effect.event, "agents", None)
                if event.agents is None or agents is None or set(agents) & set(event.agents):
                    self.expire(effect.effect_id)
            return None
        ends = None if event.duration_s is None else now_s + event.duration_s
        effect = ActiveEffect(next(self._ids), event, now_s, ends)
        self._effects[effect.effect_id] = effect
        self._changed()
        return effect

    def expire(self, effect_id: int) -> bool:
        """End an effect early or on time; ``False`` if it had already ended."""
        if self._effects.pop(effect_id, None) is None:
            return False
        self._changed()
        return True

    def expire_due(self, now_s: float) -> list[int]:
        """End every effect whose time is up at ``now_s``; the ids ended."""
        due = [
            e.effect_id for e in self._effects.values() if e.ends_at_s is not None and e.ends_at_s <= now_s
        ]
        for effect_id in due:
            self.expire(effect_id)
        return due

    def active_effects(self) -> list[ActiveEffect]:
        """Effects in force, oldest first."""
        return list(self._effects.values())

    def _changed(self) -> None:
        self.version += 1
        self._profile_cache.clear()

    # ---- queries ------------------------------------------------------------------------------------
    def own_profile(self, agent: PeerIndex) -> LinkProfile | None:
        """The agent's own profile: its latest ``degrade`` in force, else its ``agent_profiles`` entry."""
        if agent is None:
            return None
        latest: LinkProfile | None = None
        for effect in self._effects.values():
            if isinstance(effect.event, DegradeEvent) and agent in effect.event.agents:
                latest = effect.event.profile
        return latest if latest is not None else self.scenario.agent_profiles.get(agent)

    def profile(self, first: PeerIndex, second: PeerIndex) -> LinkProfile:
        """The link's profile now: region rule, no better than either agent's own profile."""
        key = pair_key(first, second)
        cached = self._profile_cache.get(key)
        if cached is not None:
            return cached
        if first is None or second is None:
            profile = self.scenario.default
        elif first == second:
            profile = self.scenario.link(first, second)
        else:
            profile = self.scenario._region_link(first, second)
            for agent in (first, second):
                own = self.own_profile(agent)
                if own is not None:
                    profile = worse(profile, own)
        self._profile_cache[key] = profile
        return profile

    def base_rtt_ms(self, first: PeerIndex, second: PeerIndex, now_s: float = 0.0) -> float:
        """The link's drawn RTT (ms) at ``now_s``, before jitter and spikes.

        A fixed link draws once per pair; a varying one draws again every ``rtt_change_s`` seconds.
        """
        profile = self.profile(first, second)
        low, high = profile.rtt_ms
        if high == low:
            return low
        epoch = int(now_s // profile.rtt_change_s) if profile.is_varying and profile.rtt_change_s else 0
        return low + (high - low) * _unit_draw(self.scenario.seed, pair_key(first, second), epoch)

    def extra_rtt_ms(self, first: PeerIndex, second: PeerIndex) -> float:
        """Sum of the latency spikes in force on this link, ms."""
        extra = 0.0
        for effect in self._effects.values():
            event = effect.event
            if isinstance(event, LatencySpikeEvent) and (
                event.agents is None or first in event.agents or second in event.agents
            ):
                extra += event.extra_rtt_ms
        return extra

    def rtt_ms(self, first: PeerIndex, second: PeerIndex, now_s: float) -> float:
        """The link's RTT now, ms: the drawn base plus spikes (jitter is added per chunk by the proxy)."""
        return self.base_rtt_ms(first, second, now_s) + self.extra_rtt_ms(first, second)

    def is_partitioned(self, first: PeerIndex, second: PeerIndex) -> bool:
        """Whether a partition in force puts exactly one of the two agents inside its set."""
        for effect in self._effects.values():
            event = effect.event
            if isinstance(event, PartitionEvent) and ((first in event.agents) != (second in event.agents)):
                return True
        return False

    def is_disconnected(self, first: PeerIndex, second: PeerIndex) -> bool:
        """Whether a disconnect in force names either agent."""
        for effect in self._effects.values():
            event = effect.event
            if isinstance(event, DisconnectEvent) and (first in event.agents or second in event.agents):
                return True
        return False

    def is_blocked(self, first: PeerIndex, second: PeerIndex) -> bool:
        """Whether new connections between the two are refused (partitioned or disconnected)."""
        return self.is_partitioned(first, second) or self.is_disconnected(first, second)
