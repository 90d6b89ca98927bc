"""Who is in the run, and how well the swarm's model does: small records in the hivemind DHT.

Keys (all under the run id): ``{run}_members`` (subkey = peer id) holds each live agent's card,
refreshed well before it expires, so a killed agent drops out after ``ttl`` seconds; ``{run}_eval``
holds each agent's latest evaluation on its slice of the test set; ``{run}_done`` is set once the
swarm has reached its target.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import hivemind
from hivemind.utils import ValueWithExpiration, get_dht_time

log = logging.getLogger("hypergpu.membership")


@dataclass(frozen=True)
class MemberCard:
    """What an agent tells the swarm about itself."""

    peer_id: str
    round: int
    samples: int
    device: str
    wallet: str | None = None


@dataclass(frozen=True)
class EvalRecord:
    """An agent's evaluation of its current model on its slice of the test set, at DHT time ``at``."""

    peer_id: str
    correct: int
    total: int
    loss_sum: float
    at: float


@dataclass(frozen=True)
class SwarmAccuracy:
    """Accuracy of the swarm: every fresh slice evaluation pooled. ``coverage`` is total / test-set size."""

    accuracy: float
    loss: float
    total: int
    agents: int
    coverage: float


def _entries(dht: hivemind.DHT, key: str) -> dict[str, Any]:
    found = dht.get(key, latest=True)
    if found is None or not isinstance(found.value, dict):
        return {}
    out = {}
    for subkey, item in found.value.items():
        if isinstance(item, ValueWithExpiration):
            out[str(subkey)] = item.value
    return out


class SwarmDirectory:
    """Reads and writes this run's records in the DHT for one agent.

    Args:
        dht: the agent's DHT node.
        run_id: the training run.
        peer_id: this agent's peer id (base58).
        ttl: seconds a membership card stays valid without a refresh.
    """

    def __init__(self, dht: hivemind.DHT, run_id: str, peer_id: str, ttl: float = 15.0) -> None:
        self.dht = dht
        self.run_id = run_id
        self.peer_id = peer_id
        self.ttl = ttl

    def publish_card(self, card: MemberCard) -> None:
        value = {"round": card.round, "samples": card.samples, "device": card.device, "wallet": card.wallet}
        self.dht.store(
            f"{self.run_id}_members",
            value,
            get_dht_time() + self.ttl,
            subkey=self.peer_id,
            return_future=True,
        )

    def withdraw(self) -> None:
        """Tell the swarm this agent is leaving (its card expires at once)."""
        self.dht.store(f"{self.run_id}_members", None, get_dht_time() + 0.5, subkey=self.peer_id)

    def members(self) -> dict[str, MemberCard]:
        cards = {}
        for peer, value in _entries(self.dht, f"{self.run_id}_members").items():
            if not isinstance(value, dict):
                continue
            cards[peer] = MemberCard(
                peer_id=peer,
                round=int(value.get("round", 0)),
                samples=int(value.get("samples", 0)),
                device=str(value.get("device", "?")),
                wallet=value.get("wallet"),
            )
        return cards

    def publish_eval(self, correct: int, total: int, loss_sum: float, ttl: float) -> None:
        value = {"correct": correct, "total": total, "loss_sum": loss_sum, "at": get_dht_time()}
        self.dht.store(
            f"{self.run_id}_eval", value, get_dht_time() + ttl, subkey=self.peer_id, return_future=True
        )

    def evaluations(self, max_age: float) -> list[EvalRecord]:
        now = get_dht_time()
        records = []
        for peer, value in _entries(self.dht, f"{self.run_id}_eval").items():
            if isinstance(value, dict) and now - float(value.get("at", 0)) <= max_age:
                records.append(
                    EvalRecord(
                        peer,
                        int(value["correct"]),
                        int(value["total"]),
                        float(value["loss_sum"]),
                        value["at"],
                    )
                )
        return records

    def mark_done(self, accuracy: float) -> None:
        self.dht.store(
            f"{self.run_id}_done", {"accuracy": accuracy, "by": self.peer_id}, get_dht_time() + 600
        )

    def is_done(self) -> bool:
        found = self.dht.get(f"{self.run_id}_done", latest=True)
        return found is not None and isinstance(found.value, dict)


def pool_evaluations(records: list[EvalRecord], test_size: int) -> SwarmAccuracy | None:
    """Pool slice evaluations into one swarm accuracy (None when there are none)."""
    total = sum(r.total for r in records)
    if total == 0:
        return None
    correct = sum(r.correct for r in records)
    loss = sum(r.loss_sum for r in records) / total
    return SwarmAccuracy(correct / total, loss, total, len(records), total / test_size if test_size else 0.0)
