"""Fetching reward proofs from coordinator_lite's HTTP API (``coordinator_lite/api.py``), checked before use.

The endpoints used (default ``http://127.0.0.1:8550``, ``chain.coordinator_url``):

- ``GET /proof/{run_id}/{account}`` -> ``{"run_id", "account", "epoch", "root", "cumulative_amount",
  "proof"}`` for the latest epoch whose root is on chain; 404 when the account has no reward there
  (or no root is posted yet). ``run_id`` is the run's name (``swarm.run_id``); amounts are decimal strings.
- ``GET /healthz`` -> ``{"run_id", ...}``: the run this coordinator serves (one coordinator, one run),
  used when the user names no run.

:func:`fetch_proofs` checks every proof against its own root before anyone spends gas on it.
"""

from __future__ import annotations

from typing import Annotated

import httpx
from eth_utils import is_address, to_checksum_address
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, ValidationError

from agent.chain.attestation import run_id_hash
from agent.chain.merkle import verify_proof
from agent.errors import UserFacingError

RUN_PROOF_PATH = "/proof/{run_id}/{account}"
HEALTH_PATH = "/healthz"


def _checksum(value: str) -> str:
    if not is_address(value):
        raise ValueError("not an EVM address (0x and 40 hex characters)")
    return to_checksum_address(value)


def _hex32(value: str) -> str:
    raw = value.removeprefix("0x")
    if len(raw) != 64 or any(c not in "0123456789abcdefABCDEF" for c in raw):
        raise ValueError("not a 32-byte hex value (0x and 64 hex characters)")
    return "0x" + raw.lower()


Address = Annotated[str, AfterValidator(_checksum)]
Hex32 = Annotated[str, AfterValidator(_hex32)]
Wei = Annotated[int, Field(ge=0), PlainSerializer(str, return_type=str)]


class CoordinatorError(UserFacingError):
    """The coordinator could not be reached or gave an unusable answer."""

    exit_code = 3


class RewardProof(BaseModel):
    """An account's cumulative reward (wei) in a run's latest posted tree, with its Merkle proof.

    ``epoch`` is the closed epoch whose root is ``root``. Unknown fields are ignored, so the
    coordinator may add some.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    run_id: str = Field(min_length=1, max_length=64)
    account: Address
    epoch: int = Field(ge=0)
    root: Hex32
    cumulative_amount: Wei
    proof: tuple[Hex32, ...]

    @property
    def run_id_hash(self) -> bytes:
        """The run's ``bytes32`` id on chain."""
        return run_id_hash(self.run_id)

    def verifies(self) -> bool:
        """Whether ``proof`` leads from this account's leaf to ``root``."""
        return verify_proof(self.root, self.account, self.cumulative_amount, self.proof)


def _get(base: str, path: str, timeout: float) -> httpx.Response:
    try:
        return httpx.get(base + path, timeout=timeout)
    except httpx.HTTPError as exc:
        raise CoordinatorError(
            f"cannot reach the coordinator at {base} ({type(exc).__name__}); check --coordinator, "
            "chain.coordinator_url or HYPERGPU_CHAIN__COORDINATOR_URL"
        ) from None


def served_run(coordinator_url: str, *, timeout: float = 10.0) -> str:
    """The run id the coordinator at ``coordinator_url`` serves (from ``/healthz``)."""
    base = coordinator_url.rstrip("/")
    response = _get(base, HEALTH_PATH, timeout)
    try:
        run_id = response.json()["run_id"] if response.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        run_id = None
    if not isinstance(run_id, str) or not run_id:
        raise CoordinatorError(f"the coordinator at {base} did not say which run it serves ({HEALTH_PATH})")
    return run_id


def fetch_proofs(
    coordinator_url: str, account: str, run_id: str | None = None, *, timeout: float = 10.0
) -> list[RewardProof]:
    """The account's proof in ``run_id`` (default: the run the coordinator serves), as a list.

    Returns ``[]`` when the account has no reward there yet. Raises :class:`CoordinatorError` (one line)
    when the coordinator is unreachable, answers with an error, or serves a proof that does not verify.
    """
    account = to_checksum_address(account)
    base = coordinator_url.rstrip("/")
    run_id = run_id or served_run(base, timeout=timeout)
    path = RUN_PROOF_PATH.format(run_id=run_id, account=account)
    response = _get(base, path, timeout)
    if response.status_code == 404:
        return []
    if response.status_code != 200:
        raise CoordinatorError(f"the coordinator at {base} answered {response.status_code} for {path}")
    try:
        proof = RewardProof.model_validate_json(response.content)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CoordinatorError(
            f"the coordinator at {base} sent a malformed proof ({where}: {first['msg']})"
        ) from None
    if proof.account != account or proof.run_id != run_id:
        raise CoordinatorError(f"the coordinator sent a proof for {proof.account} in run {proof.run_id}")
    if not proof.verifies():
        raise CoordinatorError(
            f"the coordinator's proof for run {proof.run_id} does not lead to its root {proof.root}"
        )
    return [proof]
