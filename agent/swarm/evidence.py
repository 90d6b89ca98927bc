"""Publishing round evidence (group receipts, wallet <-> peer id bindings) to the hivemind DHT; reading it.

Keys (all values are the compact msgpack records of :mod:`agent.protocol.reports` and
:mod:`agent.protocol.bindings`):

- ``f"{run_id}_receipts.{window}"``, subkey ``f"{round}:{group_id}:{peer_id}"`` (``peer_id`` = the
  publisher): group receipts. ``window`` is ``int(dht_time // window_s)`` at publishing time. The receipts
  are spread over one key per time window (60 s by default) because a DHT value is fetched whole and
  libp2p caps a message at a few MB: one key for a whole run would outgrow that within an hour of a
  large swarm. Readers scan the windows of the time range they want.
- ``f"{run_id}_bindings"``, subkey = peer id: the agent's signed :class:`SignedNodeBinding`.

Expiration is generous (6 h by default) so that a coordinator that was down for a while still finds the
evidence; coordinator_lite remembers what it has counted, so reading a receipt twice is harmless.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hivemind import DHT
from hivemind.utils.timed_storage import get_dht_time

from agent.protocol.bindings import (
    NodeBinding,
    SignedNodeBinding,
    decode_node_binding,
    encode_node_binding,
    sign_node_binding,
)
from agent.protocol.messages import AveragingRoundReport, Hardware
from agent.protocol.reports import (
    OFFCHAIN_DOMAIN,
    GroupReceipt,
    ReportDomain,
    ReportError,
    RoundReport,
    SignedRoundReport,
    build_group_receipt,
    decode_group_receipt,
    encode_group_receipt,
    sign_round_report,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from agent.chain.networks import ChainConfig

log = logging.getLogger("hypergpu.evidence")

DEFAULT_EXPIRATION_S = 6 * 3600.0
RECEIPT_WINDOW_S = 60.0
REGISTRATION_TTL_S = 7 * 86400
"""How long an agent's on-chain registration signature stays valid (the coordinator registers it soon)."""


def report_domain(chain: ChainConfig | None) -> ReportDomain:
    """The EIP-712 domain this agent signs under: its network's chain id and the attestation contract.

    Falls back to :data:`OFFCHAIN_DOMAIN` when no contract is configured (no ``chain.attestation_address``
    and no ``chain.deployment_file``), so a swarm without a chain still produces verifiable evidence.
    """
    if chain is None:
        return OFFCHAIN_DOMAIN
    address = chain.attestation_address
    if address is None and chain.deployment_file is not None:
        from agent.chain.deploy import Deployment

        address = Deployment.load(chain.deployment_file).address
    if address is None:
        return OFFCHAIN_DOMAIN
    return ReportDomain(chain_id=chain.network_info.chain_id, verifying_contract=address)


def receipts_key(run_id: str, window: int) -> str:
    """The DHT key holding the receipts of ``run_id`` published during time window ``window``."""
    return f"{run_id}_receipts.{window}"


def bindings_key(run_id: str) -> str:
    """The DHT key holding the wallet <-> peer id bindings of ``run_id``."""
    return f"{run_id}_bindings"


def receipt_subkey(receipt: GroupReceipt, publisher_peer_id: str) -> str:
    return f"{receipt.round}:{receipt.group_id}:{publisher_peer_id}"


class EvidencePublisher:
    """Stores this agent's receipts and binding in the DHT without making the training loop wait.

    Args:
        dht: this agent's running hivemind DHT.
        expiration_s: how long records stay in the DHT, seconds.
        window_s: width of the receipt time windows, seconds (readers must use the same).
    """

    def __init__(
        self, dht: DHT, *, expiration_s: float = DEFAULT_EXPIRATION_S, window_s: float = RECEIPT_WINDOW_S
    ) -> None:
        if expiration_s <= 0 or window_s <= 0:
            raise ValueError("expiration_s and window_s must be positive seconds")
        self.dht = dht
        self.expiration_s = expiration_s
        self.window_s = window_s

    def publish_receipt(
        self, receipt: GroupReceipt, publisher_peer_id: str, *, wait: bool = False
    ) -> bool | None:
        """Store ``receipt`` as published by ``publisher_peer_id``.

        With ``wait=False`` (the default) it returns at once (``None``) and a failure is logged; with
        ``wait=True`` it returns whether the DHT accepted the record.
        """
        now = get_dht_time()
        key = receipts_key(receipt.run_id, int(now // self.window_s))
        return self._store(
            key, receipt_subkey(receipt, publisher_peer_id), encode_group_receipt(receipt), now, wait
        )

    def publish_report(self, signed: SignedRoundReport, *, wait: bool = False) -> bool | None:
        """Store this agent's own signed report as a one-report receipt (coordinator_lite merges them)."""
        receipt = build_group_receipt(signed.report.round, [signed])
        return self.publish_receipt(receipt, signed.report.peer_id, wait=wait)

    def publish_round(
        self,
        account: LocalAccount,
        round_report: AveragingRoundReport,
        peer_id: str,
        domain: ReportDomain,
        *,
        update_norm: float | None = None,
        flagged: Iterable[str] = (),
    ) -> SignedRoundReport:
        """Sign this agent's report of a successful round and publish it; return it (e.g. to gather).

        Raises :class:`ReportError` for a failed round (there is nothing to attest).
        """
        report = RoundReport.from_averaging_round(
            round_report, peer_id, update_norm=update_norm, flagged=flagged
        )
        signed = sign_round_report(account, report, domain)
        self.publish_report(signed)
        return signed

    def publish_node(
        self,
        account: LocalAccount,
        run_id: str,
        peer_id: str,
        hardware: Hardware,
        domain: ReportDomain,
        *,
        benchmark_samples_per_s: float = 0.0,
        registration_ttl_s: int = REGISTRATION_TTL_S,
        wait: bool = False,
    ) -> SignedNodeBinding:
        """Sign and publish this agent's wallet <-> peer id binding with its declared hardware.

        ``benchmark_samples_per_s`` is the agent's measured training throughput (0 = not measured).
        """
        now = int(get_dht_time())
        binding = NodeBinding(
            run_id=run_id,
            peer_id=peer_id,
            wallet=account.address,
            device=hardware.device.split(":")[0].lower(),
            hardware_name=hardware.name[:128],
            benchmark_samples_per_s=max(0, round(benchmark_samples_per_s)),
            registration_deadline=now + registration_ttl_s,
            timestamp=now,
        )
        signed = sign_node_binding(account, binding, domain)
        self.publish_binding(signed, wait=wait)
        return signed

    def publish_binding(self, signed: SignedNodeBinding, *, wait: bool = False) -> bool | None:
        """Store this agent's wallet <-> peer id binding (re-publish it now and then to keep it alive)."""
        binding = signed.binding
        payload = encode_node_binding(signed)
        return self._store(bindings_key(binding.run_id), binding.peer_id, payload, get_dht_time(), wait)

    def _store(self, key: str, subkey: str, value: bytes, now: float, wait: bool) -> bool | None:
        expiration = now + self.expiration_s
        if wait:
            return bool(self.dht.store(key, value, expiration_time=expiration, subkey=subkey))
        future = self.dht.store(key, value, expiration_time=expiration, subkey=subkey, return_future=True)
        future.add_done_callback(lambda done, where=f"{key}/{subkey}": _log_store_outcome(done, where))
        return None


def _log_store_outcome(done: Future, where: str) -> None:
    try:
        stored = done.result()
    except Exception as exc:  # a DHT failure must not reach the training loop
        log.warning("publishing %s to the DHT failed: %s", where, exc)
        return
    if not stored:
        log.warning("the DHT did not accept %s (no peer answered, or a newer value exists)", where)


@dataclass
class EvidenceRead:
    """What :func:`read_evidence` found: decoded records plus one line per record that did not decode."""

    receipts: list[GroupReceipt] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)


def _dictionary_entries(found: Any) -> Iterable[tuple[Any, Any]]:
    """(subkey, value) pairs of a dictionary DHT value as ``dht.get`` returns it; empty when absent."""
    if found is None or not isinstance(found.value, dict):
        return ()
    return ((subkey, entry.value) for subkey, entry in found.value.items())


def read_evidence(
    dht: DHT,
    run_id: str,
    *,
    since: float | None = None,
    until: float | None = None,
    window_s: float = RECEIPT_WINDOW_S,
    expiration_s: float = DEFAULT_EXPIRATION_S,
) -> EvidenceRead:
    """Every receipt of ``run_id`` published between DHT times ``since`` and ``until`` (seconds).

    ``since`` defaults to ``until - expiration_s`` (everything still alive), ``until`` to now; the
    windows at both ends are read whole, so a caller may see receipts slightly outside the range.
    """
    until = get_dht_time() if until is None else until
    since = until - expiration_s if since is None else since
    first, last = math.floor(since / window_s), math.floor(until / window_s)
    futures = [
        dht.get(receipts_key(run_id, window), latest=True, return_future=True)
        for window in range(first, last + 1)
    ]
    result = EvidenceRead()
    for future in futures:
        for subkey, value in _dictionary_entries(future.result()):
            try:
                result.receipts.append(decode_group_receipt(value))
            except ReportError as exc:
                result.malformed.append(f"{subkey}: {exc.reason}")
    return result


def read_receipts(dht: DHT, run_id: str, **kwargs: Any) -> list[GroupReceipt]:
    """The decodable receipts of ``run_id`` still in the DHT (see :func:`read_evidence` for the options)."""
    return read_evidence(dht, run_id, **kwargs).receipts


def read_bindings(dht: DHT, run_id: str) -> tuple[list[SignedNodeBinding], list[str]]:
    """The decodable signed bindings of ``run_id`` and one line per record that did not decode.

    Signatures are not checked here: coordinator_lite verifies them.
    """
    bindings: list[SignedNodeBinding] = []
    malformed: list[str] = []
    for subkey, value in _dictionary_entries(dht.get(bindings_key(run_id), latest=True)):
        try:
            bindings.append(decode_node_binding(value))
        except ReportError as exc:
            malformed.append(f"{subkey}: {exc.reason}")
    return bindings, malformed
