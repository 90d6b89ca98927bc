"""Network events: scheduled or injected changes to emulated links.

An event either carries ``at_s`` (seconds after the shaper started; the shaper fires it itself),
``at_round`` (a training round; only the launcher knows rounds, so it calls
``ShapingLayer.apply_event(event)`` when its agents reach that round), or neither (apply now, e.g. a
control command). ``duration_s`` ends the effect after that many seconds; ``None`` keeps it until a
``restore`` event names the agents.

Kinds:

* ``degrade``: the agents' own profile becomes ``profile`` (their links become the worse of the
  region link and that profile), e.g. "at round 20 degrade agent 3 to poor".
* ``partition``: the agents are cut off from every agent outside the set (they still reach each
  other): bytes in flight are held until the partition heals, new connections are reset.
* ``latency_spike``: ``extra_rtt_ms`` is added to the RTT of every link touching the agents (all links
  when ``agents`` is omitted).
* ``disconnect``: every connection of the agents is reset now and new ones are refused (reset).
* ``restore``: ends every active effect that involves the agents (all effects if omitted).

Agent sets are written as a list of indices (``[5, 6, 7]``), one index, or a string of indices and
ranges (``"5-7"``, ``"0,2,4-6"``).
"""

from __future__ import annotations

import random
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from agent.errors import ConfigError
from agent.network.profiles import LinkProfile, builtin_profile


def parse_agent_set(value: Any) -> Any:
    """Turn ``"5-7"``, ``"0,2,4-6"``, ``3`` or ``[5, 6, 7]`` into a sorted tuple of distinct indices."""
    if isinstance(value, bool):
        raise ValueError("an agent set is indices like [5, 6, 7] or a range string like '5-7'")
    if isinstance(value, int):
        value = [value]
    if isinstance(value, str):
        indices: list[int] = []
        for part in value.replace(" ", "").split(","):
            low, dash, high = part.partition("-")
            if not low.isdigit() or (dash and not high.isdigit()):
                raise ValueError(f"cannot read agent set {value!r}; write indices and ranges like '0,2,4-6'")
            if dash:
                if int(high) < int(low):
                    raise ValueError(f"range {part!r} runs backwards; write low-high like '5-7'")
                indices.extend(range(int(low), int(high) + 1))
            else:
                indices.append(int(low))
        value = indices
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("an agent set must name at least one agent")
        for index in value:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ValueError(f"agent index {index!r} must be a non-negative integer")
        return tuple(sorted(set(value)))
    return value


AgentSet = Annotated[tuple[int, ...], BeforeValidator(parse_agent_set)]
"""A pydantic field type for a set of agent indices (see :func:`parse_agent_set`)."""


def coerce_profile(value: Any) -> Any:
    """A profile reference: a built-in name, or a table of fields, optionally ``base = "<built-in>"``."""
    try:
        if isinstance(value, str):
            return builtin_profile(value)
        if isinstance(value, dict) and "base" in value:
            fields = dict(value)
            base = builtin_profile(str(fields.pop("base")))
            return {**base.model_dump(), **fields}
    except ConfigError as exc:  # re-raised as ValueError so pydantic names the field that holds the name
        raise ValueError(str(exc)) from None
    return value


ProfileRef = Annotated[LinkProfile, BeforeValidator(coerce_profile)]
"""A pydantic field type for a link profile given by name or by fields."""


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at_s: float | None = Field(default=None, ge=0, description="seconds after the shaper started")
    at_round: int | None = Field(default=None, ge=0, description="training round (fired by the launcher)")
    duration_s: float | None = Field(default=None, gt=0, description="end the effect after this long")

    @model_validator(mode="after")
    def _one_trigger(self) -> _Event:
        if self.at_s is not None and self.at_round is not None:
            raise ValueError("give at_s (seconds) or at_round (training round), not both")
        return self


class DegradeEvent(_Event):
    """The agents' own profile becomes ``profile``."""

    kind: Literal["degrade"] = "degrade"
    agents: AgentSet
    profile: ProfileRef


class PartitionEvent(_Event):
    """The agents can reach each other but nobody outside the set."""

    kind: Literal["partition"] = "partition"
    agents: AgentSet


class LatencySpikeEvent(_Event):
    """``extra_rtt_ms`` more round-trip time on every link touching the agents (all links if omitted)."""

    kind: Literal["latency_spike"] = "latency_spike"
    agents: AgentSet | None = None
    extra_rtt_ms: float = Field(gt=0, le=120_000)


class DisconnectEvent(_Event):
    """All connections of the agents are reset; new ones are refused while it lasts."""

    kind: Literal["disconnect"] = "disconnect"
    agents: AgentSet


class RestoreEvent(_Event):
    """End every active effect involving the agents (every effect when ``agents`` is omitted)."""

    kind: Literal["restore"] = "restore"
    agents: AgentSet | None = None


NetworkEvent = Annotated[
    DegradeEvent | PartitionEvent | LatencySpikeEvent | DisconnectEvent | RestoreEvent,
    Field(discriminator="kind"),
]
"""Any event, told apart by its ``kind`` field."""

RandomKind = Literal["degrade", "partition", "latency_spike", "disconnect"]


class RandomEvents(BaseModel):
    """Events drawn at random (a Poisson process) but reproducibly from ``seed``.

    ``mean_interval_s`` is the mean time between events in ``[start_s, end_s)``; each picks a kind from
    ``kinds``, ``agents_per_event`` agents from ``agents`` (all agents if omitted), a duration
    uniformly in ``duration_s`` and, for spikes, an extra RTT uniformly in ``extra_rtt_ms``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(default=0, ge=0)
    mean_interval_s: float = Field(gt=0, description="mean seconds between events")
    start_s: float = Field(default=0.0, ge=0)
    end_s: float = Field(gt=0, description="no random event starts at or after this time (s)")
    kinds: tuple[RandomKind, ...] = Field(default=("latency_spike", "degrade", "disconnect"), min_length=1)
    agents: AgentSet | None = None
    agents_per_event: int = Field(default=1, ge=1)
    duration_s: tuple[float, float] = Field(default=(5.0, 20.0))
    extra_rtt_ms: tuple[float, float] = Field(default=(100.0, 500.0))
    degrade_to: ProfileRef = Field(default_factory=lambda: builtin_profile("poor"))

    @model_validator(mode="after")
    def _ranges(self) -> RandomEvents:
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        for name in ("duration_s", "extra_rtt_ms"):
            low, high = getattr(self, name)
            if low <= 0 or high < low:
                raise ValueError(f"{name} must be [min, max] with 0 < min <= max, got {(low, high)}")
        return self

    def generate(self, agent_count: int) -> list[NetworkEvent]:
        """The drawn events for a swarm of ``agent_count`` agents, in time order (same seed, same list)."""
        rng = random.Random(self.seed)
        pool = list(self.agents) if self.agents is not None else list(range(agent_count))
        pool = [agent for agent in pool if agent < agent_count]
        events: list[NetworkEvent] = []
        if not pool:
            return events
        moment = self.start_s
        while True:
            moment += rng.expovariate(1.0 / self.mean_interval_s)
            if moment >= self.end_s:
                return events
            kind = rng.choice(self.kinds)
            agents = tuple(sorted(rng.sample(pool, min(self.agents_per_event, len(pool)))))
            duration = rng.uniform(*self.duration_s)
            at_s = round(moment, 3)
            if kind == "degrade":
                events.append(
                    DegradeEvent(agents=agents, profile=self.degrade_to, at_s=at_s, duration_s=duration)
                )
            elif kind == "partition":
                events.append(PartitionEvent(agents=agents, at_s=at_s, duration_s=duration))
            elif kind == "latency_spike":
                extra = rng.uniform(*self.extra_rtt_ms)
                events.append(
                    LatencySpikeEvent(agents=agents, extra_rtt_ms=extra, at_s=at_s, duration_s=duration)
                )
            else:
                events.append(DisconnectEvent(agents=agents, at_s=at_s, duration_s=duration))
