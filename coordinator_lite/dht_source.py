"""The coordinator's evidence source in production: the run's hivemind DHT (see agent.swarm.evidence)."""

from __future__ import annotations

import logging

from hivemind import DHT

from agent.protocol.bindings import SignedNodeBinding
from agent.protocol.reports import GroupReceipt
from agent.swarm.evidence import DEFAULT_EXPIRATION_S, RECEIPT_WINDOW_S, read_bindings, read_evidence

log = logging.getLogger("hypergpu.coordinator")


class DhtEvidenceSource:
    """Reads bindings and receipts of ``run_id`` from ``dht``; undecodable records are logged and skipped.

    ``window_s`` and ``expiration_s`` must match the agents' :class:`agent.swarm.evidence.EvidencePublisher`.
    """

    def __init__(
        self,
        dht: DHT,
        run_id: str,
        *,
        window_s: float = RECEIPT_WINDOW_S,
        expiration_s: float = DEFAULT_EXPIRATION_S,
    ) -> None:
        self.dht = dht
        self.run_id = run_id
        self.window_s = window_s
        self.expiration_s = expiration_s

    def read_bindings(self) -> list[SignedNodeBinding]:
        bindings, malformed = read_bindings(self.dht, self.run_id)
        for line in malformed:
            log.warning("undecodable binding record skipped: %s", line)
        return bindings

    def read_receipts(self, since: float | None, until: float) -> list[GroupReceipt]:
        found = read_evidence(
            self.dht,
            self.run_id,
            since=since,
            until=until,
            window_s=self.window_s,
            expiration_s=self.expiration_s,
        )
        for line in found.malformed:
            log.warning("undecodable receipt skipped: %s", line)
        return found.receipts
