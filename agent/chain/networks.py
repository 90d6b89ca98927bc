"""EVM networks by name (``local``, ``monad-testnet``, ``monad``) and the ``[chain]`` configuration section.

The RPC URL, chain id and contract addresses come from the run configuration's ``[chain]`` section or
from the environment (``HYPERGPU_CHAIN__RPC_URL``, ``HYPERGPU_CHAIN__NETWORK``,
``HYPERGPU_CHAIN__ATTESTATION_ADDRESS`` ...), see :func:`agent.protocol.config.load_run_config`.
This module imports neither web3 nor the contracts, so configuration code can use it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.errors import ConfigError

_ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"


class NetworkName(StrEnum):
    """The networks HyperGPU knows by name."""

    LOCAL = "local"
    MONAD_TESTNET = "monad-testnet"
    MONAD = "monad"


@dataclass(frozen=True)
class Network:
    """One EVM network.

    ``default_rpc_url`` is used when the configuration gives none; ``explorer_tx_url`` is a template with
    ``{tx_hash}``, or ``None`` where no explorer exists (a local anvil).
    """

    name: NetworkName
    chain_id: int
    default_rpc_url: str
    explorer_tx_url: str | None
    currency: str = "MON"

    def explorer_link(self, tx_hash: str) -> str | None:
        """The explorer page of ``tx_hash`` (``0x``-prefixed hex), or ``None`` on a network without one."""
        if self.explorer_tx_url is None:
            return None
        if not tx_hash.startswith("0x"):
            tx_hash = "0x" + tx_hash
        return self.explorer_tx_url.format(tx_hash=tx_hash)


NETWORKS: dict[NetworkName, Network] = {
    NetworkName.LOCAL: Network(NetworkName.LOCAL, 31337, "http://127.0.0.1:8545", None, currency="ETH"),
    NetworkName.MONAD_TESTNET: Network(
        NetworkName.MONAD_TESTNET,
        10143,
        "https://testnet-rpc.monad.xyz",
        "https://testnet.monadvision.com/tx/{tx_hash}",
    ),
    # docs.monad.xyz/developer-essentials/network-information: chain id 143, rpc.monad.xyz, MonadVision.
    NetworkName.MONAD: Network(
        NetworkName.MONAD, 143, "https://rpc.monad.xyz", "https://monadvision.com/tx/{tx_hash}"
    ),
}


class ChainConfig(BaseModel):
    """The ``[chain]`` section of a run configuration: where the contracts live and how to talk to them.

    Addresses are ``0x``-prefixed 20-byte hex strings; ``None`` means "not deployed / not configured".
    Times are seconds.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    network: NetworkName = Field(default=NetworkName.LOCAL, description="local, monad-testnet or monad")
    rpc_url: str | None = Field(default=None, description="JSON-RPC URL; None = the network's public one")
    attestation_address: str | None = Field(
        default=None,
        pattern=_ADDRESS_PATTERN,
        description="HyperGPUAttestation (registry + ledger + distributor); None = from deployment_file",
    )
    deployment_file: Path | None = Field(
        default=None, description="JSON written by the deployer (agent.chain.deploy.Deployment.save)"
    )
    coordinator_url: str = Field(
        default="http://127.0.0.1:8550", description="coordinator_lite's HTTP endpoint (reward proofs)"
    )
    gas_margin: float = Field(default=0.10, ge=0, le=1, description="gas limit = estimate * (1 + margin)")
    receipt_timeout: float = Field(default=60.0, gt=0, le=3600, description="wait this long for a receipt")
    log_block_range: int = Field(default=1000, ge=1, le=100_000, description="blocks per eth_getLogs call")
    rpc_retries: int = Field(default=5, ge=0, le=100, description="retries of a failed RPC call")

    @field_validator("rpc_url")
    @classmethod
    def _rpc_url_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @property
    def network_info(self) -> Network:
        """The :class:`Network` this configuration names."""
        return NETWORKS[self.network]

    @property
    def effective_rpc_url(self) -> str:
        """``rpc_url`` if given, else the network's default."""
        return self.rpc_url or self.network_info.default_rpc_url


def network_by_name(name: str) -> Network:
    """The :class:`Network` called ``name``; raises :class:`ConfigError` listing the known names."""
    try:
        return NETWORKS[NetworkName(name)]
    except ValueError as exc:
        known = ", ".join(n.value for n in NetworkName)
        raise ConfigError(f"unknown network {name!r}; use one of: {known}") from exc


def network_by_chain_id(chain_id: int) -> Network | None:
    """The known network with ``chain_id``, or ``None``."""
    return next((net for net in NETWORKS.values() if net.chain_id == chain_id), None)


def explorer_link(chain_id: int, tx_hash: str) -> str | None:
    """The explorer page of ``tx_hash`` on the network with ``chain_id``, or ``None`` if it has none."""
    network = network_by_chain_id(chain_id)
    return network.explorer_link(tx_hash) if network else None
