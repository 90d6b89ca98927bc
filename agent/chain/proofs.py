"""The coordinator's reward-proof endpoint: what it serves (for coordinator_lite) and how agents fetch it.

HTTP API of coordinator_lite (default ``http://127.0.0.1:8550``, ``chain.coordinator_url``):

- ``GET /v1/proofs/{account}`` -> :class:`AccountProofs`: the account's latest proof in every run that
  rewarded it (an empty list when none did).
- ``GET /v1/runs/{run_id}/proofs/{account}`` -> :class:`RewardProof`; 404 when the account has no leaf
  in that run's latest tree. ``run_id`` is the run's name (``swarm.run_id``).

Amounts are decimal strings in JSON (wei exceed 2**53). The coordinator builds the answer with
:func:`reward_proof`; agents call :func:`fetch_proofs`, which checks every proof against its root
before anyone spends gas on it.
"""

from __future__ import annotations

from typing import Annotated

import httpx
from eth_utils import is_address, to_checksum_address
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, ValidationError

from agent.chain.attestation import run_id_hash
from agent.chain.merkle import RewardTree, verify_proof
from agent.errors import UserFacingError

PROOFS_PATH = "/v1/proofs/{account}"
RUN_PROOF_PATH = "/v1/runs/{run_id}/proofs/{account}"


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
    """An account's cumulative reward in a run's latest tree, with its Merkle proof.

    ``epoch`` is the last closed epoch (whose root is ``root``); ``run_id_hash`` is the run's ``bytes32``
    id on chain.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(min_length=1, max_length=64)
    run_id_hash: Hex32
    account: Address
    epoch: int = Field(ge=0)
    root: Hex32
    cumulative_amount: Wei
    proof: tuple[Hex32, ...]

    def verifies(self) -> bool:
        """Whether ``proof`` leads from this account's leaf to ``root``."""
        return verify_proof(self.root, self.account, self.cumulative_amount, self.proof)


class AccountProofs(BaseModel):
    """Every run's proof for one account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account: Address
    proofs: tuple[RewardProof, ...] = ()


def reward_proof(tree: RewardTree, *, run_id: str, epoch: int, account: str) -> RewardProof:
    """The coordinator's answer for ``account`` in ``run_id`` whose closed ``epoch`` has ``tree`` as root.

    Raises ``KeyError`` when the account has no leaf (serve 404).
    """
    return RewardProof(
        run_id=run_id,
        run_id_hash="0x" + run_id_hash(run_id).hex(),
        account=account,
        epoch=epoch,
        root=tree.root,
        cumulative_amount=tree.amount(account),
        proof=tuple(tree.proof(account)),
    )


def fetch_proofs(
    coordinator_url: str, account: str, run_id: str | None = None, *, timeout: float = 10.0
) -> list[RewardProof]:
    """The account's proofs from the coordinator: one run's (``run_id``) or every run's.

    Returns ``[]`` when the account has no reward there. Raises :class:`CoordinatorError` (one line) when
    the coordinator is unreachable, answers with an error, or serves a proof that does not verify.
    """
    account = to_checksum_address(account)
    base = coordinator_url.rstrip("/")
    path = (
        RUN_PROOF_PATH.format(run_id=run_id, account=account)
        if run_id
        else PROOFS_PATH.format(account=account)
    )
    try:
        response = httpx.get(base + path, timeout=timeout)
    except httpx.HTTPError as exc:
        raise CoordinatorError(
            f"cannot reach the coordinator at {base} ({type(exc).__name__}); check --coordinator, "
            "chain.coordinator_url or HYPERGPU_CHAIN__COORDINATOR_URL"
        ) from None
    if response.status_code == 404 and run_id:
        return []
    if response.status_code != 200:
        raise CoordinatorError(f"the coordinator at {base} answered {response.status_code} for {path}")
    try:
        if run_id:
            proofs = [RewardProof.model_validate_json(response.content)]
        else:
            proofs = list(AccountProofs.model_validate_json(response.content).proofs)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CoordinatorError(
            f"the coordinator at {base} sent a malformed proof ({where}: {first['msg']})"
        ) from None
    for proof in proofs:
        if proof.account != account:
            raise CoordinatorError(f"the coordinator sent a proof for {proof.account}, not for {account}")
        if not proof.verifies():
            raise CoordinatorError(
                f"the coordinator's proof for run {proof.run_id} does not lead to its root {proof.root}"
            )
    return proofs
