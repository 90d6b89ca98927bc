"""Network scenarios: which link every pair of agents sees, and what happens to the links over time.

A scenario is a TOML file (or a built-in name, see :data:`BUILTIN_SCENARIOS`)::

    name = "two-sites"
    agents = 6                    # optional; derived from the regions when omitted
    seed = 1                      # draws each link's RTT within its range, and jitter/loss
    default = "good"              # links no region rule covers, and connections from unknown sources

    [[regions]]
    name = "eu"
    agents = "0-2"                # indices and ranges, or a list [0, 1, 2]
    internal = { rtt_ms = 10 }    # links inside the region: a built-in name or a table of fields

    [[regions]]
    name = "us"
    agents = "3-5"
    internal = "good"

    [[region_links]]
    between = ["eu", "us"]
    profile = { rtt_ms = 90, loss = 0.005, bandwidth_mbps = 20 }

    [agent_profiles]              # an agent's own (access-link) profile, for all its links
    5 = "poor"

    [[events]]
    kind = "degrade"
    agents = 3
    profile = "poor"
    at_round = 20                 # or at_s = 30 (seconds after the shaper started)

    [[events]]
    kind = "partition"
    agents = "0-1"
    at_s = 40
    duration_s = 30

    [random_events]
    seed = 7
    mean_interval_s = 60
    end_s = 600

The link between agents ``i`` and ``j`` (:meth:`Scenario.link`) is the region rule (``internal`` for
the same region, the ``region_links`` entry for two regions, else ``default``), made no better than
either agent's own profile in ``agent_profiles`` (field-wise worst, see
:func:`agent.network.profiles.worse`). Links are symmetric: ``link(i, j) == link(j, i)``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.errors import ConfigError
from agent.network.events import AgentSet, NetworkEvent, ProfileRef, RandomEvents
from agent.network.profiles import BUILTIN_PROFILES, LinkProfile, builtin_profile, worse


class Region(BaseModel):
    """A group of agents that see each other over the ``internal`` link."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    agents: AgentSet
    internal: ProfileRef = Field(default_factory=lambda: builtin_profile("perfect"))


class RegionLink(BaseModel):
    """The link between any agent of one region and any agent of another."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    between: tuple[str, str]
    profile: ProfileRef


class Scenario(BaseModel):
    """Per-pair links, per-agent profiles and timed events of one emulated network."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="custom", min_length=1, max_length=64)
    description: str = ""
    agents: int | None = Field(default=None, ge=1, le=245, description="number of agents; None = derived")
    seed: int = Field(default=0, ge=0, description="seeds RTT draws within ranges, jitter and loss")
    default: ProfileRef = Field(default_factory=lambda: builtin_profile("perfect"))
    regions: tuple[Region, ...] = ()
    region_links: tuple[RegionLink, ...] = ()
    agent_profiles: dict[int, ProfileRef] = Field(default_factory=dict)
    events: tuple[NetworkEvent, ...] = ()
    random_events: RandomEvents | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        seen: dict[int, str] = {}
        names = set()
        for region in self.regions:
            if region.name in names:
                raise ValueError(f"region name {region.name!r} is used twice; give each region its own name")
            names.add(region.name)
            for agent in region.agents:
                if agent in seen:
                    raise ValueError(
                        f"agent {agent} is in regions {seen[agent]!r} and {region.name!r}; pick one"
                    )
                seen[agent] = region.name
        pairs = set()
        for rule in self.region_links:
            for name in rule.between:
                if name not in names:
                    raise ValueError(
                        f"region_links names region {name!r}, which no [[regions]] entry defines "
                        f"(defined: {', '.join(sorted(names)) or 'none'})"
                    )
            key = frozenset(rule.between)
            if len(key) != 2:
                raise ValueError(f"region_links between {list(rule.between)} must name two different regions")
            if key in pairs:
                raise ValueError(f"region_links between {sorted(key)} is given twice")
            pairs.add(key)
        needed = self.min_agents()
        if self.agents is not None and needed > self.agents:
            raise ValueError(f"agent index {needed - 1} is used but agents = {self.agents}; raise agents")
        return self

    def min_agents(self) -> int:
        """The smallest swarm this scenario can describe: one more than the highest index it names."""
        indices = [agent for region in self.regions for agent in region.agents]
        indices += list(self.agent_profiles)
        for event in self.events:
            indices += list(getattr(event, "agents", None) or ())
        return max(indices, default=-1) + 1

    def agent_count(self, requested: int | None = None) -> int:
        """How many agents to run: ``requested``, checked against this scenario (else ConfigError)."""
        if requested is None:
            if self.agents is not None:
                return self.agents
            if self.min_agents() == 0:
                raise ConfigError(
                    f"scenario {self.name!r} does not fix the number of agents; pass --agents N"
                )
            return self.min_agents()
        if requested < 1 or requested > 245:
            raise ConfigError(f"--agents {requested} is out of range; emulation supports 1 to 245 agents")
        if self.agents is not None and requested != self.agents:
            raise ConfigError(
                f"scenario {self.name!r} is written for {self.agents} agents, not {requested}; "
                f"pass --agents {self.agents} or use another scenario"
            )
        needed = self.min_agents()
        if requested < needed:
            raise ConfigError(
                f"scenario {self.name!r} names agent {needed - 1}; pass --agents {needed} or more"
            )
        return requested

    def region_of(self, agent: int) -> str | None:
        """The name of ``agent``'s region, or ``None`` when it is in none."""
        for region in self.regions:
            if agent in region.agents:
                return region.name
        return None

    def link(self, first: int | None, second: int | None) -> LinkProfile:
        """The static link between two agents (``None`` = an unknown peer, which gets ``default``)."""
        if first is None or second is None:
            return self.default
        if first == second:
            return builtin_profile("perfect")
        profile = self._region_link(first, second)
        for agent in (first, second):
            own = self.agent_profiles.get(agent)
            if own is not None:
                profile = worse(profile, own)
        return profile

    def _region_link(self, first: int, second: int) -> LinkProfile:
        region_a, region_b = self.region_of(first), self.region_of(second)
        if region_a is None or region_b is None:
            return self.default
        if region_a == region_b:
            return next(region.internal for region in self.regions if region.name == region_a)
        for rule in self.region_links:
            if set(rule.between) == {region_a, region_b}:
                return rule.profile
        return self.default

    def timed_events(self, agent_count: int) -> list[NetworkEvent]:
        """Events the shaper fires itself (``at_s`` set), random ones included, in time order."""
        events = [event for event in self.events if event.at_s is not None]
        if self.random_events is not None:
            events += self.random_events.generate(agent_count)
        return sorted(events, key=lambda event: event.at_s or 0.0)

    def round_events(self) -> list[NetworkEvent]:
        """Events the launcher must fire when its agents reach ``at_round``, in round order."""
        events = [event for event in self.events if event.at_round is not None]
        return sorted(events, key=lambda event: event.at_round or 0)

    def without_loss(self) -> Scenario:
        """This scenario with every loss set to zero (to measure bandwidth caps in isolation)."""
        data = self.model_dump(mode="json")

        def strip(node: Any) -> Any:
            if isinstance(node, dict):
                return {key: (0.0 if key == "loss" else strip(value)) for key, value in node.items()}
            if isinstance(node, list):
                return [strip(item) for item in node]
            return node

        return Scenario.model_validate(strip(data))


def _regions3() -> Scenario:
    inter = {"loss": 0.005, "bandwidth_mbps": 20}
    return Scenario.model_validate(
        {
            "name": "regions3",
            "description": "three regions of 3, 3 and 2 agents; agent 7 (region 3) on the poor profile",
            "agents": 8,
            "regions": [
                {"name": "region1", "agents": "0-2", "internal": {"name": "intra", "rtt_ms": 10}},
                {"name": "region2", "agents": "3-5", "internal": {"name": "intra", "rtt_ms": 10}},
                {"name": "region3", "agents": "6-7", "internal": {"name": "intra", "rtt_ms": 10}},
            ],
            "region_links": [
                {"between": ["region1", "region2"], "profile": {"name": "r1-r2", "rtt_ms": 100, **inter}},
                {"between": ["region1", "region3"], "profile": {"name": "r1-r3", "rtt_ms": 150, **inter}},
                {"between": ["region2", "region3"], "profile": {"name": "r2-r3", "rtt_ms": 250, **inter}},
            ],
            "agent_profiles": {7: "poor"},
        }
    )


def _uniform(profile: str) -> Scenario:
    return Scenario(
        name=profile, description=f"every link {BUILTIN_PROFILES[profile].describe()}", default=profile
    )


BUILTIN_SCENARIOS: dict[str, Scenario] = {"regions3": _regions3()} | {
    name: _uniform(name) for name in BUILTIN_PROFILES
}
"""``regions3`` (the benchmark's network) and one uniform scenario per built-in profile (``perfect``...)."""


def format_scenario_error(error: ValidationError, source: str) -> str:
    """One line per bad field: its dotted path, the value given, and what is wrong."""
    lines = [f"invalid network scenario ({source}):"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(file)"
        value = item.get("input")
        shown = "missing" if item["type"] == "missing" else repr(value)
        if isinstance(value, dict | list) and len(shown) > 60:
            shown = shown[:57] + "..."
        lines.append(f"  {field} = {shown}: {item['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def load_scenario(source: str | Path) -> Scenario:
    """A scenario from a built-in name (``regions3``, ``perfect``...), a ``.toml`` file or a ``.json`` file.

    Raises :class:`ConfigError` naming the field that is wrong, or the file that cannot be read.
    """
    text_source = str(source)
    if isinstance(source, str) and source in BUILTIN_SCENARIOS:
        return BUILTIN_SCENARIOS[source]
    path = Path(source)
    if not path.is_file():
        raise ConfigError(
            f"network scenario {text_source!r} is neither a built-in ({', '.join(BUILTIN_SCENARIOS)}) "
            "nor an existing file"
        )
    try:
        raw = path.read_text()
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read network scenario {path}: {exc}") from exc
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"network scenario {path} is not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}"
        ) from exc
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_scenario_error(exc, str(path))) from exc
