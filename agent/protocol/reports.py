"""Signed per-round reports and group receipts: the evidence that coordinator_lite turns into rewards.

After each successful averaging round an agent signs a :class:`RoundReport` with its wallet key using
EIP-712 typed data (``RoundReport`` struct below, domain name ``"HyperGPU"``, version ``"1"``). The
members of the group exchange their signed reports, and a :class:`GroupReceipt` carries every member's
signature for one group, so that nobody can claim a round that the other members did not sign.

The struct that is signed (all integers fixed point, so that every signer encodes the same bytes)::

    RoundReport(string runId, uint64 round, string groupId, bytes32 membersHash, string peerId,
                uint64 samples, uint64 computeMillis, uint64 bytesSent, uint64 bytesReceived,
                uint64 updateNormMicro, bytes32 flaggedHash, uint64 timestamp)

``membersHash`` is ``keccak256(abi.encode(string[] sortedPeerIds))`` and ``flaggedHash`` the same
hash of the sorted ids of the members whose update this signer found far outside the group's (an empty
list hashes to ``keccak256(abi.encode(new string[](0)))``); both lists travel beside the signature.

Domain: ``chainId`` and ``verifyingContract`` = the ContributionLedger address of the run's chain.
Without a configured chain the documented fallback :data:`OFFCHAIN_DOMAIN` (chain id 0, the zero
address) is used; a report signed for one domain does not verify under another.

Shared by the agent and coordinator_lite: no torch, no hivemind imports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import msgpack
from eth_abi import encode as abi_encode
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys import keys
from eth_utils import keccak, to_checksum_address
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.protocol.messages import AveragingRoundReport

UINT64_MAX = 2**64 - 1
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ENCODING_VERSION = 1
"""First element of every encoded report/receipt; bump it when the layout changes."""

MAX_GROUP_MEMBERS = 256
"""The largest group a receipt may describe (``SwarmConfig.target_group_size`` allows up to 256)."""


class ReportError(ValueError):
    """A report or receipt that is malformed, badly signed, or inconsistent. ``reason`` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _checksum(value: str) -> str:
    try:
        return to_checksum_address(value)
    except (ValueError, TypeError) as exc:
        raise ValueError("not a 0x-prefixed 20-byte hex address") from exc


EvmAddress = Annotated[str, AfterValidator(_checksum)]
"""An EVM address, normalised to its EIP-55 checksum form."""

Uint64 = Annotated[int, Field(ge=0, le=UINT64_MAX)]
PeerIdStr = Annotated[str, Field(min_length=1, max_length=128)]
RunIdStr = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReportDomain(_Frozen):
    """The EIP-712 domain reports are signed under. ``chain_id`` 0 with the zero address = no chain."""

    name: str = "HyperGPU"
    version: str = "1"
    chain_id: int = Field(ge=0, description="EVM chain id (31337 anvil, 10143 Monad testnet, 143 Monad)")
    verifying_contract: EvmAddress = Field(description="ContributionLedger address")

    def as_eip712(self) -> dict[str, Any]:
        """The domain as eth-account's ``encode_typed_data`` expects it."""
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


OFFCHAIN_DOMAIN = ReportDomain(chain_id=0, verifying_contract=ZERO_ADDRESS)
"""The fallback domain when no chain is configured (tests, a swarm run without attestation)."""

REPORT_TYPES: dict[str, list[dict[str, str]]] = {
    "RoundReport": [
        {"name": "runId", "type": "string"},
        {"name": "round", "type": "uint64"},
        {"name": "groupId", "type": "string"},
        {"name": "membersHash", "type": "bytes32"},
        {"name": "peerId", "type": "string"},
        {"name": "samples", "type": "uint64"},
        {"name": "computeMillis", "type": "uint64"},
        {"name": "bytesSent", "type": "uint64"},
        {"name": "bytesReceived", "type": "uint64"},
        {"name": "updateNormMicro", "type": "uint64"},
        {"name": "flaggedHash", "type": "bytes32"},
        {"name": "timestamp", "type": "uint64"},
    ]
}


def peer_list_hash(peer_ids: Iterable[str]) -> bytes:
    """``keccak256(abi.encode(string[]))`` of the sorted, de-duplicated ``peer_ids`` (32 bytes)."""
    return keccak(abi_encode(["string[]"], [sorted(set(peer_ids))]))


def _sorted_unique(values: Sequence[str], what: str) -> tuple[str, ...]:
    if len(set(values)) != len(values):
        raise ValueError(f"{what} contains duplicate peer ids")
    return tuple(sorted(values))


class RoundReport(_Frozen):
    """What one agent (``peer_id``) did in one averaging round of group ``group_id``.

    Units: ``compute_ms`` milliseconds of computation since the agent's previous round, ``samples``
    training samples in that time, ``bytes_*`` bytes exchanged in the round, ``update_norm_micro`` the
    L2 norm of the agent's update in millionths (0 = not measured), ``timestamp`` Unix seconds (UTC)
    when the round finished. ``members`` and ``flagged`` are kept sorted.
    """

    run_id: RunIdStr
    round: Uint64
    group_id: str = Field(min_length=2, max_length=128, pattern=r"^[0-9a-f]+$", description="lowercase hex")
    members: tuple[PeerIdStr, ...] = Field(min_length=1, max_length=MAX_GROUP_MEMBERS)
    peer_id: PeerIdStr
    samples: Uint64
    compute_ms: Uint64
    bytes_sent: Uint64 = 0
    bytes_received: Uint64 = 0
    update_norm_micro: Uint64 = 0
    flagged: tuple[PeerIdStr, ...] = ()
    timestamp: Uint64

    @field_validator("members")
    @classmethod
    def _members_sorted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _sorted_unique(value, "members")

    @field_validator("flagged")
    @classmethod
    def _flagged_sorted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _sorted_unique(value, "flagged")

    @model_validator(mode="after")
    def _signer_in_group(self) -> RoundReport:
        if self.peer_id not in self.members:
            raise ValueError(f"peer_id {self.peer_id} is not one of the group's members")
        stray = set(self.flagged) - set(self.members)
        if stray:
            raise ValueError(f"flagged peers {sorted(stray)} are not members of the group")
        return self

    @property
    def compute_seconds(self) -> float:
        return self.compute_ms / 1000.0

    @property
    def update_norm(self) -> float | None:
        """The update norm as a float, or ``None`` when the agent did not measure it."""
        return self.update_norm_micro / 1e6 if self.update_norm_micro else None

    @property
    def members_hash(self) -> bytes:
        return peer_list_hash(self.members)

    def typed_message(self) -> dict[str, Any]:
        """The ``RoundReport`` struct's values, as signed."""
        return {
            "runId": self.run_id,
            "round": self.round,
            "groupId": self.group_id,
            "membersHash": self.members_hash,
            "peerId": self.peer_id,
            "samples": self.samples,
            "computeMillis": self.compute_ms,
            "bytesSent": self.bytes_sent,
            "bytesReceived": self.bytes_received,
            "updateNormMicro": self.update_norm_micro,
            "flaggedHash": peer_list_hash(self.flagged),
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_averaging_round(
        cls,
        round_report: AveragingRoundReport,
        peer_id: str,
        *,
        update_norm: float | None = None,
        flagged: Iterable[str] = (),
    ) -> RoundReport:
        """Convert the agent's own :class:`AveragingRoundReport` of a successful round.

        ``peer_id`` is this agent's libp2p peer id (base58); ``update_norm`` the L2 norm of its update
        (``None`` when not measured); ``flagged`` the members whose update was far outside the group's.
        Raises :class:`ReportError` for a failed round (nothing to attest).
        """
        if not round_report.success or not round_report.group_id:
            raise ReportError(f"round {round_report.round} failed; only successful rounds are reported")
        members = set(round_report.members) | {peer_id}
        try:
            return cls(
                run_id=round_report.run_id,
                round=round_report.round,
                group_id=round_report.group_id.lower(),
                members=tuple(members),
                peer_id=peer_id,
                samples=round_report.samples,
                compute_ms=round(round_report.compute_seconds * 1000),
                bytes_sent=round_report.bytes_sent,
                bytes_received=round_report.bytes_received,
                update_norm_micro=0 if update_norm is None else max(0, round(update_norm * 1e6)),
                flagged=tuple(flagged),
                timestamp=int(round_report.timestamp.timestamp()),
            )
        except ValidationError as exc:
            raise ReportError(f"cannot build a round report: {exc.errors()[0]['msg']}") from exc


class SignedRoundReport(_Frozen):
    """A :class:`RoundReport` with its signer's address and 65-byte EIP-712 signature (r, s, v)."""

    report: RoundReport
    signer_address: EvmAddress
    signature: bytes = Field(min_length=65, max_length=65)


class GroupReceipt(_Frozen):
    """Every member's signed report for one group of one round, as one member (or the coordinator) saw it.

    ``round`` is the publishing member's round number (members keep their own counters, so their
    reports may carry different rounds); ``reports`` may hold fewer than ``members`` when a member's
    report did not arrive: coordinator_lite merges receipts of the same ``group_id``.
    """

    run_id: RunIdStr
    round: Uint64
    group_id: str = Field(min_length=2, max_length=128, pattern=r"^[0-9a-f]+$")
    members: tuple[PeerIdStr, ...] = Field(min_length=1, max_length=MAX_GROUP_MEMBERS)
    reports: tuple[SignedRoundReport, ...] = Field(min_length=1, max_length=MAX_GROUP_MEMBERS)

    @field_validator("members")
    @classmethod
    def _members_sorted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _sorted_unique(value, "members")

    @model_validator(mode="after")
    def _reports_match(self) -> GroupReceipt:
        signers = [signed.report.peer_id for signed in self.reports]
        if len(set(signers)) != len(signers):
            raise ValueError("a receipt holds at most one report per member")
        for signed in self.reports:
            report = signed.report
            if (report.run_id, report.group_id, report.members) != (self.run_id, self.group_id, self.members):
                raise ValueError(
                    f"report of {report.peer_id} describes another run, group or member list than the receipt"
                )
        return self


def _signable(report: RoundReport, domain: ReportDomain):
    return encode_typed_data(
        domain_data=domain.as_eip712(), message_types=REPORT_TYPES, message_data=report.typed_message()
    )


def report_digest(report: RoundReport, domain: ReportDomain) -> bytes:
    """The 32-byte EIP-712 hash that is signed: equal digests mean the very same report."""
    signable = _signable(report, domain)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_round_report(account: LocalAccount, report: RoundReport, domain: ReportDomain) -> SignedRoundReport:
    """Sign ``report`` with ``account`` (the agent's wallet) under ``domain``."""
    signed = account.sign_message(_signable(report, domain))
    return SignedRoundReport(report=report, signer_address=account.address, signature=bytes(signed.signature))


def recover_report_signer(
    signed: SignedRoundReport, domain: ReportDomain, digest: bytes | None = None
) -> str:
    """The checksum address that produced ``signed.signature`` over ``signed.report`` under ``domain``.

    ``digest`` (from :func:`report_digest`) saves encoding the typed data again when the caller has it.
    Raises :class:`ReportError` when the signature cannot be recovered at all.
    """
    if digest is None:
        digest = report_digest(signed.report, domain)
    signature = signed.signature
    v = signature[64] - 27 if signature[64] >= 27 else signature[64]
    try:
        public_key = keys.Signature(
            signature_bytes=signature[:64] + bytes([v])
        ).recover_public_key_from_msg_hash(digest)
        return public_key.to_checksum_address()
    except Exception as exc:  # eth-keys raises several types for malformed (r, s, v)
        raise ReportError(f"signature of {signed.report.peer_id} is malformed: {exc}") from exc


def verify_signed_report(
    signed: SignedRoundReport, domain: ReportDomain, *, expected_run_id: str | None = None
) -> str:
    """Check that ``signed`` was signed by ``signed.signer_address`` under ``domain``; return that address.

    ``expected_run_id``, when given, must equal the report's run id. Raises :class:`ReportError` with the
    reason: a forged or altered report, a signature for another chain or contract, or another run.
    """
    if expected_run_id is not None and signed.report.run_id != expected_run_id:
        raise ReportError(f"report is for run {signed.report.run_id!r}, not {expected_run_id!r}")
    recovered = recover_report_signer(signed, domain)
    if recovered != signed.signer_address:
        raise ReportError(
            f"signature of {signed.report.peer_id} round {signed.report.round} does not match its signer "
            f"{signed.signer_address} (forged, altered, or signed for another chain/contract)"
        )
    return recovered


def build_group_receipt(own_round: int, reports: Iterable[SignedRoundReport]) -> GroupReceipt:
    """Assemble a :class:`GroupReceipt` from the signed reports of one group (the publisher's ``own_round``).

    Reports of other groups or with another member list raise :class:`ReportError`; a member's
    duplicate copies of the same report are kept once.
    """
    unique: dict[str, SignedRoundReport] = {}
    for signed in reports:
        previous = unique.get(signed.report.peer_id)
        if previous is not None and previous != signed:
            raise ReportError(f"two different reports from {signed.report.peer_id} for the same group")
        unique[signed.report.peer_id] = signed
    if not unique:
        raise ReportError("a group receipt needs at least one signed report")
    first = next(iter(unique.values())).report
    try:
        return GroupReceipt(
            run_id=first.run_id,
            round=own_round,
            group_id=first.group_id,
            members=first.members,
            reports=tuple(sorted(unique.values(), key=lambda signed: signed.report.peer_id)),
        )
    except ValidationError as exc:
        raise ReportError(f"cannot build a group receipt: {exc.errors()[0]['msg']}") from exc


# ---- compact binary encoding (msgpack arrays; members carried once per receipt) ---------------------

_RECEIPT_TAG = "R"
_REPORT_TAG = "S"


def _report_fields(signed: SignedRoundReport) -> list[Any]:
    report = signed.report
    return [
        report.round,
        report.peer_id,
        report.samples,
        report.compute_ms,
        report.bytes_sent,
        report.bytes_received,
        report.update_norm_micro,
        list(report.flagged),
        report.timestamp,
        bytes.fromhex(signed.signer_address[2:]),
        signed.signature,
    ]


def _report_from_fields(
    fields: list[Any], run_id: str, group_id: str, members: list[str]
) -> SignedRoundReport:
    (round_, peer_id, samples, compute_ms, sent, received, norm, flagged, timestamp, signer, signature) = (
        fields
    )
    report = RoundReport(
        run_id=run_id,
        round=round_,
        group_id=group_id,
        members=tuple(members),
        peer_id=peer_id,
        samples=samples,
        compute_ms=compute_ms,
        bytes_sent=sent,
        bytes_received=received,
        update_norm_micro=norm,
        flagged=tuple(flagged),
        timestamp=timestamp,
    )
    return SignedRoundReport(report=report, signer_address="0x" + bytes(signer).hex(), signature=signature)


def encode_signed_report(signed: SignedRoundReport) -> bytes:
    """A compact msgpack encoding of one signed report (members included), e.g. for hivemind's ``gather``."""
    report = signed.report
    payload = [ENCODING_VERSION, _REPORT_TAG, report.run_id, report.group_id, list(report.members)]
    return msgpack.packb([*payload, _report_fields(signed)], use_bin_type=True)


def decode_signed_report(data: bytes) -> SignedRoundReport:
    """Inverse of :func:`encode_signed_report`. Raises :class:`ReportError` for any malformed input."""
    try:
        version, tag, run_id, group_id, members, fields = msgpack.unpackb(
            data, raw=False, strict_map_key=True
        )
        _check_header(version, tag, _REPORT_TAG)
        return _report_from_fields(fields, run_id, group_id, members)
    except ReportError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, ValidationError) as exc:
        raise ReportError(f"not a valid encoded signed report: {_short(exc)}") from exc


def encode_group_receipt(receipt: GroupReceipt) -> bytes:
    """A compact msgpack encoding of a receipt: about 1.9 KB for a group of 8 (fits a DHT value)."""
    payload = [ENCODING_VERSION, _RECEIPT_TAG, receipt.run_id, receipt.round, receipt.group_id]
    reports = [_report_fields(signed) for signed in receipt.reports]
    return msgpack.packb([*payload, list(receipt.members), reports], use_bin_type=True)


def decode_group_receipt(data: bytes) -> GroupReceipt:
    """Inverse of :func:`encode_group_receipt`. Raises :class:`ReportError` for any malformed input."""
    try:
        version, tag, run_id, round_, group_id, members, reports = msgpack.unpackb(
            data, raw=False, strict_map_key=True
        )
        _check_header(version, tag, _RECEIPT_TAG)
        if not isinstance(reports, list) or len(reports) > MAX_GROUP_MEMBERS:
            raise ReportError("a receipt's reports must be a list of at most 256 entries")
        signed = tuple(_report_from_fields(fields, run_id, group_id, members) for fields in reports)
        return GroupReceipt(
            run_id=run_id, round=round_, group_id=group_id, members=tuple(members), reports=signed
        )
    except ReportError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, ValidationError) as exc:
        raise ReportError(f"not a valid encoded group receipt: {_short(exc)}") from exc


def _check_header(version: Any, tag: Any, expected_tag: str) -> None:
    if version != ENCODING_VERSION:
        raise ReportError(f"encoding version {version!r} is not supported (expected {ENCODING_VERSION})")
    if tag != expected_tag:
        raise ReportError(f"wrong record type {tag!r} (expected {expected_tag!r})")


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else first["msg"]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
