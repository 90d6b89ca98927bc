"""coordinator_lite's durable state in SQLite: epochs, counted reports, records, rewards, bindings, txs.

One file per run (stdlib sqlite3, WAL journal, ``synchronous=FULL``). Closing an epoch is ONE SQLite
transaction (:meth:`CoordinatorState.commit_epoch`): the records, the rewards, the cumulative amounts,
the counted-report marks, the pending reports and the DHT read frontier all change together, or not at
all. So a coordinator killed with ``kill -9`` at any moment restarts either before the close (and closes
the epoch again from the same evidence) or after it (and only re-enqueues the chain writes, which the
outbox de-duplicates by key): no epoch is lost or repeated.

Epoch lifecycle (``epochs.status``)::

    open --commit_epoch--> closed --root confirmed on chain--> posted

An epoch that ends without a single counted round is not closed: it stays open one more epoch length and
its pool grows by one more epoch's pool (the chain takes no empty epochs).
Wei amounts are stored as decimal TEXT because they exceed SQLite's 64-bit integers.
"""

from __future__ import annotations

import csv
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TextIO

from agent.protocol.bindings import SignedNodeBinding, decode_node_binding, encode_node_binding
from agent.protocol.reports import SignedRoundReport, decode_signed_report, encode_signed_report
from coordinator_lite.scoring import ScoreCard
from coordinator_lite.verification import AcceptedRound, CountedMark, OutlierFlag, Rejection

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
    epoch           INTEGER PRIMARY KEY,
    status          TEXT NOT NULL,
    opened_at       REAL NOT NULL,
    ticks           INTEGER NOT NULL DEFAULT 1,   -- epoch lengths covered (an epoch without rounds extends)
    pool_wei        TEXT NOT NULL DEFAULT '0',
    carried_in_wei  TEXT NOT NULL DEFAULT '0',
    closed_at       REAL,
    strategy        TEXT,
    distributed_wei TEXT,
    carried_out_wei TEXT,
    root            TEXT,
    total_allocated TEXT,
    posted_at       REAL
);
CREATE TABLE IF NOT EXISTS records (
    epoch INTEGER NOT NULL, peer_id TEXT NOT NULL, wallet TEXT NOT NULL,
    rounds_accepted INTEGER NOT NULL, rounds_missed INTEGER NOT NULL, compute_seconds REAL NOT NULL,
    samples INTEGER NOT NULL, quality REAL NOT NULL, reliability REAL NOT NULL, uptime REAL NOT NULL,
    communication_success REAL NOT NULL, outlier_rounds INTEGER NOT NULL, score REAL NOT NULL,
    reward_wei TEXT NOT NULL,
    PRIMARY KEY (epoch, peer_id)
);
CREATE TABLE IF NOT EXISTS cumulative (
    epoch INTEGER NOT NULL, wallet TEXT NOT NULL, amount_wei TEXT NOT NULL, PRIMARY KEY (epoch, wallet)
);
CREATE TABLE IF NOT EXISTS counted (
    peer_id TEXT NOT NULL, group_id TEXT NOT NULL, digest BLOB NOT NULL, members_hash BLOB NOT NULL,
    wallet TEXT NOT NULL, round INTEGER NOT NULL, timestamp INTEGER NOT NULL, epoch INTEGER NOT NULL,
    PRIMARY KEY (peer_id, group_id)
);
CREATE INDEX IF NOT EXISTS counted_group ON counted (group_id);
CREATE TABLE IF NOT EXISTS pending (signature BLOB PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rejections (
    epoch INTEGER NOT NULL, peer_id TEXT NOT NULL, round INTEGER NOT NULL, group_id TEXT NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outliers (
    epoch INTEGER NOT NULL, peer_id TEXT NOT NULL, group_id TEXT NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bindings (
    peer_id TEXT PRIMARY KEY, wallet TEXT NOT NULL UNIQUE, record BLOB NOT NULL,
    registered INTEGER NOT NULL DEFAULT 0            -- 1 once queued for TrainingRegistry.registerNodes
);
CREATE TABLE IF NOT EXISTS txs (
    key TEXT PRIMARY KEY, epoch INTEGER NOT NULL, purpose TEXT NOT NULL, state TEXT NOT NULL,
    tx_hash TEXT, block_number INTEGER, gas_used INTEGER
);
"""


class EpochStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"  # committed locally; chain writes queued in the outbox
    POSTED = "posted"  # the root is on chain


@dataclass(frozen=True)
class EpochRow:
    """One epoch as stored. Wei amounts are ints; times Unix seconds."""

    epoch: int
    status: EpochStatus
    opened_at: float
    ticks: int
    pool_wei: int
    carried_in_wei: int
    closed_at: float | None
    strategy: str | None
    distributed_wei: int | None
    carried_out_wei: int | None
    root: str | None
    total_allocated: int | None
    posted_at: float | None


@dataclass(frozen=True)
class EpochOutcome:
    """Everything :meth:`CoordinatorState.commit_epoch` writes for one closed epoch."""

    epoch: int
    closed_at: float
    strategy: str
    cards: list[ScoreCard]
    rewards: dict[str, int]
    """wei per peer id"""
    carried_out_wei: int
    cumulative: dict[str, int]
    """cumulative wei per wallet after this epoch (every wallet ever rewarded)"""
    root: str
    accepted: list[AcceptedRound]
    rejections: list[Rejection]
    outliers: list[OutlierFlag]
    pending: list[SignedRoundReport]
    read_until: float
    """DHT time up to which receipts were read"""


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


class CoordinatorState:
    """The SQLite state of one run. Thread-safe (one connection behind a lock).

    Parameters:
        path: the SQLite file (its folder is created).
        run_id: the run; a file made for another run is refused with ``ValueError``.
    """

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a closed epoch must survive a crash
        self._lock = threading.RLock()
        self._db.executescript(_SCHEMA)
        with self._transaction() as db:
            stored = db.execute("SELECT value FROM meta WHERE key = 'run_id'").fetchone()
            if stored is None:
                db.execute("INSERT INTO meta VALUES ('run_id', ?), ('schema', ?)", (run_id, SCHEMA_VERSION))
            elif stored["value"] != run_id:
                raise ValueError(
                    f"state file {self.path} belongs to run {stored['value']!r}, not {run_id!r}; "
                    "use another --state-dir per run"
                )
        self.run_id = run_id

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- meta -----------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def read_until(self) -> float | None:
        """DHT time up to which receipts were read and counted (``None`` before the first epoch)."""
        value = self.get_meta("read_until")
        return None if value is None else float(value)

    # ---- epochs ---------------------------------------------------------------------------------------

    @staticmethod
    def _epoch(row: sqlite3.Row) -> EpochRow:
        return EpochRow(
            epoch=row["epoch"],
            status=EpochStatus(row["status"]),
            opened_at=row["opened_at"],
            ticks=row["ticks"],
            pool_wei=int(row["pool_wei"]),
            carried_in_wei=int(row["carried_in_wei"]),
            closed_at=row["closed_at"],
            strategy=row["strategy"],
            distributed_wei=_int(row["distributed_wei"]),
            carried_out_wei=_int(row["carried_out_wei"]),
            root=row["root"],
            total_allocated=_int(row["total_allocated"]),
            posted_at=row["posted_at"],
        )

    def open_epoch(self, now: float, pool_wei: int) -> EpochRow:
        """The open epoch, created (epoch 0, or the one after the last closed) if there is none."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM epochs WHERE status = 'open'").fetchone()
            if row is None:
                last = db.execute("SELECT * FROM epochs ORDER BY epoch DESC LIMIT 1").fetchone()
                number = 0 if last is None else last["epoch"] + 1
                carried = "0" if last is None else last["carried_out_wei"]
                opened_at = now if last is None else last["closed_at"]
                db.execute(
                    "INSERT INTO epochs (epoch, status, opened_at, ticks, pool_wei, carried_in_wei) "
                    "VALUES (?, 'open', ?, 1, ?, ?)",
                    (number, opened_at, str(pool_wei), carried),
                )
                row = db.execute("SELECT * FROM epochs WHERE epoch = ?", (number,)).fetchone()
        return self._epoch(row)

    def extend_epoch(self, epoch: int, ticks: int, pool_wei: int) -> EpochRow:
        """Let the open ``epoch`` cover ``ticks`` epoch lengths with ``pool_wei`` in all (no rounds yet)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE epochs SET ticks = ?, pool_wei = ? WHERE epoch = ? AND status = 'open'",
                (ticks, str(pool_wei), epoch),
            )
            row = db.execute("SELECT * FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
        return self._epoch(row)

    def epochs(self) -> list[EpochRow]:
        return [self._epoch(row) for row in self._query("SELECT * FROM epochs ORDER BY epoch")]

    def epoch(self, epoch: int) -> EpochRow | None:
        rows = self._query("SELECT * FROM epochs WHERE epoch = ?", (epoch,))
        return self._epoch(rows[0]) if rows else None

    def latest_closed(self) -> EpochRow | None:
        rows = self._query("SELECT * FROM epochs WHERE status != 'open' ORDER BY epoch DESC LIMIT 1")
        return self._epoch(rows[0]) if rows else None

    def commit_epoch(self, outcome: EpochOutcome) -> None:
        """Close the open epoch ``outcome.epoch`` with everything it decided, atomically.

        Raises ``ValueError`` if that epoch is not the open one (already closed: nothing is written twice).
        """
        distributed = sum(outcome.rewards.values())
        with self._transaction() as db:
            row = db.execute("SELECT status FROM epochs WHERE epoch = ?", (outcome.epoch,)).fetchone()
            if row is None or row["status"] != EpochStatus.OPEN:
                raise ValueError(f"epoch {outcome.epoch} is not open; it cannot be closed again")
            db.execute(
                "UPDATE epochs SET status = 'closed', closed_at = ?, strategy = ?, distributed_wei = ?, "
                "carried_out_wei = ?, root = ?, total_allocated = ? WHERE epoch = ?",
                (
                    outcome.closed_at,
                    outcome.strategy,
                    str(distributed),
                    str(outcome.carried_out_wei),
                    outcome.root,
                    str(sum(outcome.cumulative.values())),
                    outcome.epoch,
                ),
            )
            db.executemany(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        outcome.epoch,
                        c.peer_id,
                        c.wallet,
                        c.rounds_accepted,
                        c.rounds_missed,
                        c.compute_seconds,
                        c.samples,
                        c.quality,
                        c.reliability,
                        c.uptime,
                        c.communication_success,
                        c.outlier_rounds,
                        c.score,
                        str(outcome.rewards.get(c.peer_id, 0)),
                    )
                    for c in outcome.cards
                ],
            )
            db.executemany(
                "INSERT INTO cumulative VALUES (?, ?, ?)",
                [(outcome.epoch, wallet, str(amount)) for wallet, amount in outcome.cumulative.items()],
            )
            db.executemany(
                "INSERT INTO counted VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        a.peer_id,
                        a.group_id,
                        a.digest,
                        a.members_hash,
                        a.wallet,
                        a.round,
                        a.timestamp,
                        outcome.epoch,
                    )
                    for a in outcome.accepted
                ],
            )
            db.execute("DELETE FROM pending")
            db.executemany(
                "INSERT OR IGNORE INTO pending VALUES (?, ?)",
                [(signed.signature, encode_signed_report(signed)) for signed in outcome.pending],
            )
            db.executemany(
                "INSERT INTO rejections VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (outcome.epoch, r.peer_id, r.round, r.group_id, r.reason, r.detail)
                    for r in outcome.rejections
                ],
            )
            db.executemany(
                "INSERT INTO outliers VALUES (?, ?, ?, ?, ?)",
                [(outcome.epoch, o.peer_id, o.group_id, o.kind, o.detail) for o in outcome.outliers],
            )
            db.execute("INSERT OR REPLACE INTO meta VALUES ('read_until', ?)", (repr(outcome.read_until),))

    def save_progress(self, pending: list[SignedRoundReport], read_until: float) -> None:
        """Between closes (an epoch extended without rounds): keep the pending reports and the frontier."""
        with self._transaction() as db:
            db.execute("DELETE FROM pending")
            db.executemany(
                "INSERT OR IGNORE INTO pending VALUES (?, ?)",
                [(signed.signature, encode_signed_report(signed)) for signed in pending],
            )
            db.execute("INSERT OR REPLACE INTO meta VALUES ('read_until', ?)", (repr(read_until),))

    def mark_posted(self, epoch: int, now: float) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE epochs SET status = 'posted', posted_at = ? WHERE epoch = ? AND status = 'closed'",
                (now, epoch),
            )

    # ---- counted evidence (coordinator_lite.verification.CountedEvidence) -----------------------------

    def counted(self, peer_id: str, group_id: str) -> CountedMark | None:
        rows = self._query("SELECT * FROM counted WHERE peer_id = ? AND group_id = ?", (peer_id, group_id))
        return self._mark(rows[0]) if rows else None

    def counted_in_group(self, group_id: str) -> list[CountedMark]:
        return [
            self._mark(row) for row in self._query("SELECT * FROM counted WHERE group_id = ?", (group_id,))
        ]

    def last_timestamp(self, peer_id: str) -> int | None:
        rows = self._query("SELECT MAX(timestamp) AS last FROM counted WHERE peer_id = ?", (peer_id,))
        return rows[0]["last"] if rows else None

    @staticmethod
    def _mark(row: sqlite3.Row) -> CountedMark:
        return CountedMark(row["peer_id"], bytes(row["digest"]), bytes(row["members_hash"]), row["wallet"])

    def pending_reports(self) -> list[SignedRoundReport]:
        return [
            decode_signed_report(bytes(row["record"])) for row in self._query("SELECT record FROM pending")
        ]

    # ---- bindings -------------------------------------------------------------------------------------

    def save_binding(self, signed: SignedNodeBinding) -> None:
        """Remember a verified binding (first one wins: a conflicting one is ignored by the caller)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO bindings (peer_id, wallet, record) VALUES (?, ?, ?) "
                "ON CONFLICT(peer_id) DO UPDATE SET record = excluded.record WHERE wallet = excluded.wallet",
                (signed.binding.peer_id, signed.binding.wallet, encode_node_binding(signed)),
            )

    def bindings(self) -> list[SignedNodeBinding]:
        rows = self._query("SELECT record FROM bindings ORDER BY rowid")
        return [decode_node_binding(bytes(row["record"])) for row in rows]

    def unregistered_bindings(self) -> list[SignedNodeBinding]:
        rows = self._query("SELECT record FROM bindings WHERE registered = 0 ORDER BY rowid")
        return [decode_node_binding(bytes(row["record"])) for row in rows]

    def mark_registered(self, peer_ids: Iterable[str]) -> None:
        with self._transaction() as db:
            db.executemany("UPDATE bindings SET registered = 1 WHERE peer_id = ?", [(p,) for p in peer_ids])

    def registered_wallets(self) -> set[str]:
        return {row["wallet"] for row in self._query("SELECT wallet FROM bindings WHERE registered = 1")}

    # ---- chain transactions ---------------------------------------------------------------------------

    def record_tx(
        self,
        key: str,
        epoch: int,
        purpose: str,
        state: str,
        tx_hash: str | None = None,
        block_number: int | None = None,
        gas_used: int | None = None,
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO txs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, epoch, purpose, state, tx_hash, block_number, gas_used),
            )

    def txs(self, epoch: int | None = None) -> list[dict[str, object]]:
        sql = "SELECT * FROM txs" + (" WHERE epoch = ?" if epoch is not None else "") + " ORDER BY rowid"
        return [dict(row) for row in self._query(sql, () if epoch is None else (epoch,))]

    # ---- reads for the API and the history ------------------------------------------------------------

    def cumulative(self, epoch: int) -> dict[str, int]:
        rows = self._query("SELECT wallet, amount_wei FROM cumulative WHERE epoch = ?", (epoch,))
        return {row["wallet"]: int(row["amount_wei"]) for row in rows}

    def records(self, epoch: int | None = None) -> list[dict[str, object]]:
        sql = (
            "SELECT * FROM records"
            + (" WHERE epoch = ?" if epoch is not None else "")
            + " ORDER BY epoch, peer_id"
        )
        rows = self._query(sql, () if epoch is None else (epoch,))
        return [{**dict(row), "reward_wei": int(row["reward_wei"])} for row in rows]

    def rejections(self, epoch: int | None = None) -> list[dict[str, object]]:
        sql = "SELECT * FROM rejections" + (" WHERE epoch = ?" if epoch is not None else "")
        return [dict(row) for row in self._query(sql, () if epoch is None else (epoch,))]

    def outliers(self, epoch: int | None = None) -> list[dict[str, object]]:
        sql = "SELECT * FROM outliers" + (" WHERE epoch = ?" if epoch is not None else "")
        return [dict(row) for row in self._query(sql, () if epoch is None else (epoch,))]

    def agents(self) -> list[dict[str, object]]:
        """Per peer: wallet, epochs, rounds, compute, samples, total reward (all epochs)."""
        rows = self._query(
            "SELECT peer_id, wallet, COUNT(*) AS epochs, SUM(rounds_accepted) AS rounds_accepted, "
            "SUM(rounds_missed) AS rounds_missed, SUM(compute_seconds) AS compute_seconds, "
            "SUM(samples) AS samples, SUM(outlier_rounds) AS outlier_rounds, MAX(epoch) AS last_epoch "
            "FROM records GROUP BY peer_id ORDER BY peer_id"
        )
        rewards: dict[str, int] = {}
        for row in self._query("SELECT peer_id, reward_wei FROM records"):
            rewards[row["peer_id"]] = rewards.get(row["peer_id"], 0) + int(row["reward_wei"])
        return [{**dict(row), "reward_wei": rewards.get(row["peer_id"], 0)} for row in rows]

    def export_history_csv(self, out: TextIO) -> int:
        """Write every epoch record (a row per peer per epoch, with its root) as CSV; return the row count."""
        columns = [
            "epoch", "closed_at", "peer_id", "wallet", "rounds_accepted", "rounds_missed", "compute_seconds",
            "samples", "quality", "reliability", "uptime", "communication_success", "outlier_rounds", "score",
            "reward_wei", "strategy", "root", "status",
        ]  # fmt: skip
        rows = self._query(
            "SELECT r.*, e.closed_at, e.strategy, e.root, e.status FROM records r "
            "JOIN epochs e ON e.epoch = r.epoch ORDER BY r.epoch, r.peer_id"
        )
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[column] for column in columns])
        return len(rows)
