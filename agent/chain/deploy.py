"""Deploy HyperGPU's contract from the shipped artifact; used by scripts/demo, the tests and the coordinator.

    deployment = deploy_attestation(client, coordinator=coordinator_address)
    deployment.save(Path(".hypergpu/deployment.json"))      # chain.deployment_file reads it back

The deployer (``client``'s account) becomes the default admin unless ``admin`` is given; the
coordinator role goes to ``coordinator`` (``None``: the deployer). Needs only the artifact JSON, not
Node or forge.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address

from agent.chain.artifacts import load_artifact
from agent.chain.attestation import CONTRACT_NAME
from agent.chain.client import ChainClient
from agent.chain.networks import ChainConfig
from agent.errors import ConfigError


@dataclass(frozen=True)
class Deployment:
    """Where the contract lives. ``block`` is the creation block: read events from there on."""

    chain_id: int
    address: str
    block: int
    tx_hash: str
    admin: str
    coordinator: str
    gas_used: int

    def save(self, path: Path) -> None:
        """Write as JSON (atomically, so a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        """Read a file written by :meth:`save`; raises :class:`ConfigError` when missing or malformed."""
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except FileNotFoundError:
            raise ConfigError(
                f"deployment file {path} does not exist; deploy first or fix chain.deployment_file"
            ) from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"deployment file {path} is not a deployment record ({exc})") from None


def constructor_data(admin: str, coordinator: str, admin_delay_s: int) -> bytes:
    """Init code of the attestation contract: bytecode + ABI-encoded ``(adminDelay, admin, coordinator)``."""
    artifact = load_artifact(CONTRACT_NAME)
    constructor = next(item for item in artifact["abi"] if item["type"] == "constructor")
    types = [arg["type"] for arg in constructor["inputs"]]
    arguments = abi_encode(
        types, [admin_delay_s, to_checksum_address(admin), to_checksum_address(coordinator)]
    )
    return bytes.fromhex(artifact["bytecode"].removeprefix("0x")) + arguments


def deploy_attestation(
    client: ChainClient,
    *,
    admin: str | None = None,
    coordinator: str | None = None,
    admin_delay_s: int = 0,
) -> Deployment:
    """Deploy HyperGPUAttestation from ``client``'s account and wait for it.

    Parameters:
        admin: default admin (pause, roles, two-step handover); ``None`` = the deployer.
        coordinator: first COORDINATOR_ROLE holder; ``None`` = the deployer.
        admin_delay_s: seconds a proposed new admin must wait before accepting.
    """
    deployer = client.address
    if deployer is None:
        raise ConfigError("deploying needs a wallet: give the chain client an account")
    admin = admin or deployer
    coordinator = coordinator or deployer
    result = client.transact(None, constructor_data(admin, coordinator, admin_delay_s), action="deployment")
    assert result.contract_address is not None
    return Deployment(
        chain_id=client.chain_id,
        address=to_checksum_address(result.contract_address),
        block=result.block_number,
        tx_hash=result.tx_hash,
        admin=to_checksum_address(admin),
        coordinator=to_checksum_address(coordinator),
        gas_used=result.gas_used,
    )


def attestation_address(config: ChainConfig) -> str:
    """The contract address the ``[chain]`` section names: ``attestation_address``, else the address in
    ``deployment_file``. Raises :class:`ConfigError` when neither is set or the file is for another chain."""
    if config.attestation_address:
        return to_checksum_address(config.attestation_address)
    if config.deployment_file is None:
        raise ConfigError(
            "no contract address: set chain.attestation_address (HYPERGPU_CHAIN__ATTESTATION_ADDRESS) "
            "or chain.deployment_file (HYPERGPU_CHAIN__DEPLOYMENT_FILE)"
        )
    deployment = Deployment.load(config.deployment_file)
    expected = config.network_info.chain_id
    if deployment.chain_id != expected:
        raise ConfigError(
            f"{config.deployment_file} is a deployment on chain {deployment.chain_id}, but chain.network "
            f"{config.network.value} has chain id {expected}"
        )
    return to_checksum_address(deployment.address)
