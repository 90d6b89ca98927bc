"""Who is in the run, and how well the swarm's model does: one small record per agent in the hivemind DHT.

Key ``{run}_members``, subkey = peer id: each live agent's card, holding its round, sample count, device,
its latest evaluation on its slice of the test set, and whether it saw the swarm reach the target. The
card is refreshed well before it expires, so a killed agent drops out after ``ttl`` seconds. One
``store`` and one ``get`` per tick keep the monitoring traffic small. An agent that leaves replaces its
card with a short-lived "left" card, so a "target reached" flag outlives the agent that raised it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import hivemind
from hivemind.utils import ValueWithExpiration, get_dht_time

log = logging.getLogger("hypergpu.membership")


@dataclass(frozen=True)
class EvalRecord:
    """An agent's evaluation of the agreed model on its slice of the test set, at DHT time ``at``."""

    peer_id: str
    correct: int
    total: int
    loss_sum: float
    at: float


@dataclass(frozen=True)
class MemberCard:
    """What an agent tells the swarm about itself. ``done`` is the accuracy at which it saw the target."""

    peer_id: str
    round: int
    samples: int
    device: str
    wallet: str | None = None
    evaluation: EvalRecord | None = None
    done: float | None = None
    left: bool = False

    def to_value(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "round": self.round,
            "samples": self.samples,
            "device": self.device,
            "wallet": self.wallet,
            "done": self.done,
            "left": self.left,
        }
        if self.evaluation is not None:
            e = self.evaluation
            value["eval"] = [e.correct, e.total, e.loss_sum, e.at]
        return value

    @classmethod
    def from_value(cls, peer_id: str, value: dict[str, Any]) -> MemberCard:
        raw_eval = value.get("eval")
        evaluation = None
        if isinstance(raw_eval, list | tuple) and len(raw_eval) == 4:
            evaluation = EvalRecord(
                peer_id, int(raw_eval[0]), int(raw_eval[1]), float(raw_eval[2]), float(raw_eval[3])
            )
        done = value.get("done")
        return cls(
            peer_id=peer_id,
            round=int(value.get("round", 0)),
            samples=int(value.get("samples", 0)),
            device=str(value.get("device", "?")),
            wallet=value.get("wallet"),
            evaluation=evaluation,
            done=float(done) if done is not None else None,
            left=bool(value.get("left", False)),
        )


@dataclass(frozen=True)
class SwarmAccuracy:
    """Accuracy of the swarm: every fresh slice evaluation pooled. ``coverage`` is total / test-set size."""

    accuracy: float
    loss: float
    total: int
    agents: int
    coverage: float


class SwarmDirectory:
    """Reads and writes this run's cards in the DHT for one agent.

    Args:
        dht: the agent's DHT node.
        run_id: the training run.
        peer_id: this agent's peer id (base58).
        ttl: seconds a card stays valid without a refresh.
    """

    def __init__(self, dht: hivemind.DHT, run_id: str, peer_id: str, ttl: float = 15.0) -> None:
        self.dht = dht
        self.run_id = run_id
        self.peer_id = peer_id
        self.ttl = ttl
        self.key = f"{run_id}_members"

    def publish_card(self, card: MemberCard) -> None:
        """Store (or refresh) this agent's card without waiting for the DHT."""
        self.dht.store(
            self.key, card.to_value(), get_dht_time() + self.ttl, subkey=self.peer_id, return_future=True
        )

    def withdraw(self, card: MemberCard) -> None:
        """Leave the run: a "left" card (keeping the done flag) replaces the live one."""
        left = MemberCard(
            card.peer_id, card.round, card.samples, card.device, card.wallet, None, card.done, True
        )
        # The DHT keeps the value with the latest expiration, so the "left" card must outlive the live one.
        self.dht.store(self.key, left.to_value(), get_dht_time() + self.ttl + 1.0, subkey=self.peer_id)

    def read(self) -> dict[str, MemberCard]:
        """Every card now in the DHT, live or left, by peer id (blocks for one DHT lookup)."""
        return _parse_cards(self.dht.get(self.key, latest=True))

    def read_async(self) -> dict[str, MemberCard] | None:
        """Non-blocking read: the cards fetched by the previous call's lookup (None until one has finished).

        Each call starts the next lookup, so the training loop never waits for the DHT.
        """
        result = None
        if self._pending is not None and self._pending.done():
            try:
                result = _parse_cards(self._pending.result())
            except Exception:  # a failed lookup: try again next time
                log.debug("membership lookup failed", exc_info=True)
                result = None
            self._pending = None
        if self._pending is None:
            self._pending = self.dht.get(self.key, latest=True, return_future=True)
        return result

    _pending: Any = None

    def members(self, cards: dict[str, MemberCard] | None = None) -> dict[str, MemberCard]:
        """The live members (cards not marked as left)."""
        cards = self.read() if cards is None else cards
        return {peer: card for peer, card in cards.items() if not card.left}


def _parse_cards(found: Any) -> dict[str, MemberCard]:
    if found is None or not isinstance(found.value, dict):
        return {}
    cards = {}
    for subkey, item in found.value.items():
        if isinstance(item, ValueWithExpiration) and isinstance(item.value, dict):
            try:
                cards[str(subkey)] = MemberCard.from_value(str(subkey), item.value)
            except (TypeError, ValueError):
                log.debug("ignoring a malformed card from %s", subkey)
    return cards


def fresh_evaluations(cards: dict[str, MemberCard], max_age: float) -> list[EvalRecord]:
    """The evaluations of live members that are at most ``max_age`` seconds old."""
    now = get_dht_time()
    return [
        card.evaluation
        for card in cards.values()
        if card.evaluation is not None and not card.left and now - card.evaluation.at <= max_age
    ]


def target_seen(cards: dict[str, MemberCard]) -> float | None:
    """The accuracy at which some agent (live or just left) saw the swarm reach its target, if any."""
    flags = [card.done for card in cards.values() if card.done is not None]
    return max(flags) if flags else None


def pool_evaluations(records: list[EvalRecord], test_size: int) -> SwarmAccuracy | None:
    """Pool slice evaluations into one swarm accuracy (None when there are none)."""
    total = sum(r.total for r in records)
    if total == 0:
        return None
    correct = sum(r.correct for r in records)
    loss = sum(r.loss_sum for r in records) / total
    return SwarmAccuracy(correct / total, loss, total, len(records), total / test_size if test_size else 0.0)
