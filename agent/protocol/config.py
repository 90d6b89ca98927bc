"""Run configuration: a TOML file, then ``HYPERGPU_*`` environment variables, then CLI flags.

Later sources win. Nested fields use ``__`` in environment variables, e.g.
``HYPERGPU_TRAINING__LEARNING_RATE=0.05``. ``load_run_config`` is the one way to build a config.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.chain.networks import ChainConfig
from agent.errors import ConfigError

DEFAULT_MODELS = ("mlp", "cnn-small", "cnn", "resnet-small")
DEFAULT_DATASETS = ("mnist", "cifar10", "synthetic")


def _known_models() -> tuple[str, ...]:
    try:
        from agent.training.models import available_models

        return tuple(available_models())
    except ImportError:  # the registry is optional for pure-config use (coordinator_lite)
        return DEFAULT_MODELS


def _known_datasets() -> tuple[str, ...]:
    try:
        from agent.training.datasets import available_datasets

        return tuple(available_datasets())
    except ImportError:
        return DEFAULT_DATASETS


class _Section(BaseModel):
    # NaN and infinity pass range checks (NaN compares false, inf satisfies ge=0): refuse both.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TrainingConfig(_Section):
    """What to train and how. Units: learning rate per optimizer step, batch size in samples."""

    model: str = Field(default="cnn-small", description="model registry name")
    dataset: str = Field(default="mnist", description="dataset plugin name")
    data_dir: Path | None = Field(default=None, description="dataset folder; None = the plugin's default")
    learning_rate: float = Field(default=0.05, gt=0, le=10, description="SGD learning rate")
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=64, ge=1, le=8192, description="local batch size, samples")
    local_steps: int = Field(default=32, ge=1, le=10_000, description="optimizer steps between rounds (H)")
    target_accuracy: float = Field(default=0.98, gt=0, le=1, description="stop when test accuracy >= this")
    epochs: float = Field(default=20, gt=0, description="stop after this many passes over the shard")
    grad_clip_norm: float | None = Field(default=5.0, gt=0, description="clip gradients to this L2 norm")
    seed: int = Field(default=0, ge=0)
    outer_lr: float = Field(
        default=1.0, gt=0, le=10, description="outer (swarm) step size; 1 = plain averaging"
    )
    outer_momentum: float = Field(default=0.0, ge=0, lt=1, description="Nesterov momentum of the outer step")
    eval_interval_s: float = Field(
        default=2.0, gt=0, le=3600, description="seconds between test-slice evaluations"
    )

    @field_validator("model")
    @classmethod
    def _model_known(cls, value: str) -> str:
        known = _known_models()
        if value not in known:
            raise ValueError(f"unknown model; allowed: {', '.join(known)}")
        return value

    @field_validator("dataset")
    @classmethod
    def _dataset_known(cls, value: str) -> str:
        known = _known_datasets()
        if value not in known:
            raise ValueError(f"unknown dataset; allowed: {', '.join(known)}")
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_not_empty(cls, value: object) -> object:
        # an empty string would become Path("."), silently the current directory
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty path; give the dataset folder, or leave data_dir out for the default")
        return value

    @field_validator("data_dir")
    @classmethod
    def _data_dir_readable(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        if not value.is_dir() or not os.access(value, os.R_OK | os.X_OK):
            raise ValueError("not a readable directory; give the folder that holds the dataset files")
        return value


class SwarmConfig(_Section):
    """How this agent meets its peers. Times are seconds."""

    run_id: str = Field(default="mnist-demo", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    initial_peers: list[str] = Field(
        default_factory=list, description="multiaddrs of peers already in the run"
    )
    host: str = Field(default="127.0.0.1", description="IP address to listen on")
    port: int = Field(default=0, ge=0, le=65535, description="TCP port for libp2p; 0 = any free port")

    @field_validator("host")
    @classmethod
    def _host_is_ipv4(cls, value: str) -> str:
        try:
            ipaddress.IPv4Address(value)  # the DHT listens on /ip4/<host>/tcp/<port>
        except ValueError:
            raise ValueError(
                "not an IPv4 address; use 127.0.0.1 (this host only) or 0.0.0.0 (all interfaces)"
            ) from None
        return value

    target_group_size: int = Field(default=8, ge=2, le=256)
    min_group_size: int = Field(default=2, ge=1)
    matchmaking_time: float = Field(default=2.0, gt=0, le=600, description="seconds to gather a group")
    averaging_timeout: float = Field(default=30.0, gt=0, le=3600)
    request_timeout: float = Field(
        default=1.0, gt=0, le=600, description="matchmaking request timeout, seconds"
    )
    adaptive: bool = Field(default=False, description="network-aware grouping, local work and timeouts")
    member_ttl: float = Field(
        default=15.0, ge=2, le=3600, description="a silent agent leaves after this long"
    )
    expected_agents: int = Field(default=0, ge=0, description="wait for this many members before sharding")
    bootstrap_timeout: float = Field(default=30.0, gt=0, description="give up joining after this long")

    @model_validator(mode="after")
    def _group_sizes(self) -> SwarmConfig:
        if self.request_timeout >= self.matchmaking_time:
            raise ValueError(
                f"request_timeout ({self.request_timeout}) must be below "
                f"matchmaking_time ({self.matchmaking_time})"
            )
        if self.min_group_size > self.target_group_size:
            raise ValueError(
                f"min_group_size ({self.min_group_size}) must not exceed target_group_size "
                f"({self.target_group_size})"
            )
        return self


class CheckpointConfig(_Section):
    """Where and how often an agent saves model + optimizer + round."""

    dir: Path = Field(default=Path(".hypergpu/checkpoints"))
    every_rounds: int = Field(default=20, ge=1)
    keep: int = Field(default=2, ge=1)


class LogConfig(_Section):
    """Console and rotating-file logging."""

    level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    file: Path | None = Field(default=Path(".hypergpu/agent.log"))
    max_bytes: int = Field(default=5_000_000, ge=10_000)
    backups: int = Field(default=3, ge=0)

    @field_validator("level", mode="before")
    @classmethod
    def _level_upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class RunConfig(BaseSettings):
    """The whole configuration of one agent in one run."""

    model_config = SettingsConfigDict(
        env_prefix="HYPERGPU_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    training: TrainingConfig = Field(default_factory=TrainingConfig)
    swarm: SwarmConfig = Field(default_factory=SwarmConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    chain: ChainConfig = Field(default_factory=ChainConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_run_config merges file < environment < flags itself, so that flags beat the environment
        # (pydantic-settings alone would let the environment override nested init values).
        return (init_settings,)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_overrides() -> dict[str, Any]:
    """``HYPERGPU_A__B=v`` as ``{"a": {"b": "v"}}``, for merging between the file and the flags."""
    nested: dict[str, Any] = {}
    for key, value in os.environ.items():
        if not key.startswith("HYPERGPU_") or "__" not in key:
            continue
        path = key.removeprefix("HYPERGPU_").lower().split("__")
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(value)
    return nested


def _parse_env_value(value: str) -> Any:
    """JSON lists and objects (e.g. ``'["/ip4/..."]'`` for initial_peers) as values; the rest as text."""
    if value.lstrip().startswith(("[", "{")):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # validation then names the field and the text given
    return value


def _allowed_fields(loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the section that ``loc`` points into (empty when it is not a section)."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per bad field: where it came from, the field, the value given, and what is allowed."""
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(root)"
        value = item.get("input")
        shown = "missing" if item["type"] == "missing" else repr(value)
        if isinstance(value, dict):
            shown = "{...}"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown field; allowed: {', '.join(_allowed_fields(item['loc']))}"
        lines.append(f"  {field} = {shown}: {message}")
    return "\n".join(lines)


def load_run_config(
    file: Path | None = None, overrides: dict[str, Any] | None = None, *, use_env: bool = True
) -> RunConfig:
    """Build a RunConfig from a TOML ``file``, the environment and ``overrides`` (CLI flags), in that order.

    ``overrides`` is nested like the file, e.g. ``{"training": {"batch_size": 32}}``; ``None`` values
    are ignored so unset flags do not mask the file or the environment.
    Raises :class:`ConfigError` with a readable message (field, value, what is allowed).
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if file is not None:
        source = str(file)
        try:
            data = tomllib.loads(Path(file).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {file} does not exist; pass an existing TOML file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, a binary file
            raise ConfigError(f"cannot read config file {file} ({exc}); pass a readable TOML file") from exc
    if use_env:
        data = _deep_merge(data, _env_overrides())
    if overrides:
        data = _deep_merge(data, _drop_none(overrides))
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{source} + environment + flags")) from exc


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            sub = _drop_none(value)
            if sub:
                out[key] = sub
        elif value is not None:
            out[key] = value
    return out
