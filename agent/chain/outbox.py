"""A durable SQLite outbox: every chain write is recorded before it is sent, and lands exactly once.

    outbox = Outbox(Path("coordinator/outbox.sqlite"), client, already_done={"post_epoch": epoch_posted})
    outbox.start()                                   # background sender thread
    to, data = client.calldata(ledger, "postEpoch", [run_id, epoch, root, ...])
    outbox.enqueue(f"epoch:{run_id}:{epoch}", to, data, purpose="post_epoch")   # returns at once
    ...
    outbox.stop()

Lifecycle of an entry (table ``outbox``, one row per idempotency key)::

    queued --sign, store hash+raw tx, commit--> sent --receipt ok--> confirmed
       |                                          |--receipt reverted--> failed (or already_done)
       +--already_done(entry) is True--> already_done

Why each write lands exactly once, even after ``kill -9`` or an RPC outage:

1. The signed transaction (hash and raw bytes) is committed to SQLite *before* it is broadcast, so a
   crash can never leave a broadcast transaction the outbox does not know about.
2. A restarted sender first asks the chain for the recorded hash's receipt; if there is none it
   re-broadcasts the *same* signed bytes (same nonce, same hash), which a chain can mine only once.
3. Only when that nonce was provably taken by another transaction (``nonce too low`` and no receipt)
   does it sign again, after asking the entry's ``already_done`` callback (a contract read such as
   "is this epoch already posted?") so that work done by someone else is not repeated.

Entries are sent one at a time in enqueue order, each after the previous one's receipt, so a write
may depend on the one before it. Callers never wait for the chain: :meth:`Outbox.enqueue` only
writes SQLite. RPC failures (node down, rate limits, and also a node refusing the transaction, e.g.
for insufficient funds) are retried with exponential backoff forever, the reason kept in
``last_error``; a write whose gas estimate or execution reverts is marked ``failed`` with the decoded
reason and the queue moves on.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from eth_utils import to_checksum_address
from requests import RequestException
from web3.exceptions import Web3RPCError

from agent.chain.client import (
    ChainClient,
    ChainUnreachableError,
    NonceConsumedError,
    SignedTransaction,
    TransactionRevertedError,
    TxResult,
)
from agent.protocol.timeutil import format_utc, utc_now

log = logging.getLogger("hypergpu.chain.outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    key          TEXT    NOT NULL UNIQUE,
    purpose      TEXT    NOT NULL,
    target       TEXT    NOT NULL,
    calldata     BLOB    NOT NULL,
    value_wei    TEXT    NOT NULL,            -- decimal text: wei amounts exceed SQLite's int64
    state        TEXT    NOT NULL,
    tx_hash      TEXT,
    raw_tx       BLOB,
    nonce        INTEGER,
    gas_limit    INTEGER,
    gas_estimate INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    block_number INTEGER,
    gas_used     INTEGER,
    created_at   TEXT    NOT NULL,
    sent_at      TEXT,
    done_at      TEXT
);
CREATE INDEX IF NOT EXISTS outbox_open ON outbox (state, seq);
"""


class OutboxState(StrEnum):
    """Where an outbox entry is in its life."""

    QUEUED = "queued"
    SENT = "sent"  # signed and recorded; broadcast or about to be
    CONFIRMED = "confirmed"
    ALREADY_DONE = "already_done"  # the chain already had the effect; nothing was sent
    FAILED = "failed"


OPEN_STATES = (OutboxState.QUEUED, OutboxState.SENT)


class OutboxConflictError(ValueError):
    """An idempotency key was enqueued again with different content."""


@dataclass(frozen=True)
class OutboxEntry:
    """One recorded write. ``value_wei`` is attached native currency; gas figures in gas units."""

    seq: int
    key: str
    purpose: str
    target: str
    calldata: bytes
    value_wei: int
    state: OutboxState
    tx_hash: str | None
    nonce: int | None
    gas_limit: int | None
    gas_estimate: int | None
    attempts: int
    last_error: str | None
    block_number: int | None
    gas_used: int | None
    created_at: str
    sent_at: str | None
    done_at: str | None

    @property
    def is_open(self) -> bool:
        """Still to be sent or confirmed."""
        return self.state in OPEN_STATES


AlreadyDone = Callable[[OutboxEntry], bool]
"""Asks the chain whether an entry's effect is already there (e.g. the epoch root is posted)."""


class _Transient(Exception):
    """A failure worth retrying later (RPC unreachable, node busy, receipt late)."""


class Outbox:
    """The durable outbox of one signing account.

    Parameters:
        path: SQLite file (created with its folder; WAL journal, synchronous=FULL).
        client: the :class:`ChainClient` that signs and sends (one account per outbox).
        already_done: per ``purpose``, a callback reading the chain to tell whether an entry's effect
            is already there; entries of other purposes are assumed not done.
        on_finished: called (in the sender thread) with each entry that reached a final state.
        receipt_wait: seconds to wait for a receipt before re-broadcasting the same transaction.
        backoff_initial / backoff_max: seconds of the exponential backoff after a transient failure.
        idle_poll: seconds the sender sleeps when the queue is empty (enqueue wakes it sooner).
    """

    def __init__(
        self,
        path: Path,
        client: ChainClient,
        *,
        already_done: Mapping[str, AlreadyDone] | None = None,
        on_finished: Callable[[OutboxEntry], None] | None = None,
        receipt_wait: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 15.0,
        idle_poll: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.client = client
        self.already_done = dict(already_done or {})
        self.on_finished = on_finished
        self.receipt_wait = receipt_wait
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.idle_poll = idle_poll
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a recorded transaction must survive a crash
        self._db.executescript(_SCHEMA)
        self._db_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    # ---- storage -------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _entry(row: sqlite3.Row) -> OutboxEntry:
        return OutboxEntry(
            seq=row["seq"],
            key=row["key"],
            purpose=row["purpose"],
            target=row["target"],
            calldata=bytes(row["calldata"]),
            value_wei=int(row["value_wei"]),
            state=OutboxState(row["state"]),
            tx_hash=row["tx_hash"],
            nonce=row["nonce"],
            gas_limit=row["gas_limit"],
            gas_estimate=row["gas_estimate"],
            attempts=row["attempts"],
            last_error=row["last_error"],
            block_number=row["block_number"],
            gas_used=row["gas_used"],
            created_at=row["created_at"],
            sent_at=row["sent_at"],
            done_at=row["done_at"],
        )

    def _update(self, key: str, **fields: object) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._transaction() as db:
            db.execute(f"UPDATE outbox SET {assignments} WHERE key = ?", [*fields.values(), key])

    def enqueue(
        self, key: str, target: str, calldata: bytes, purpose: str, value_wei: int = 0
    ) -> OutboxEntry:
        """Record a write to send; returns at once. The same ``key`` twice is one write.

        Parameters:
            key: idempotency key naming the effect, e.g. ``"epoch:run-7:12"``.
            target: contract (or account) address.
            calldata: ABI-encoded call (see :meth:`ChainClient.calldata`).
            purpose: what the write is for; selects the ``already_done`` callback.
            value_wei: native currency to attach, in wei.

        Raises :class:`OutboxConflictError` if ``key`` was recorded with other content.
        """
        target = to_checksum_address(target)
        with self._transaction() as db:
            row = db.execute("SELECT * FROM outbox WHERE key = ?", (key,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO outbox (key, purpose, target, calldata, value_wei, state, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        purpose,
                        target,
                        calldata,
                        str(value_wei),
                        OutboxState.QUEUED,
                        format_utc(utc_now()),
                    ),
                )
                row = db.execute("SELECT * FROM outbox WHERE key = ?", (key,)).fetchone()
        entry = self._entry(row)
        if (entry.target, entry.calldata, entry.value_wei, entry.purpose) != (
            target,
            bytes(calldata),
            value_wei,
            purpose,
        ):
            raise OutboxConflictError(f"outbox key {key!r} was already recorded with different content")
        self._wake.set()
        return entry

    def get(self, key: str) -> OutboxEntry | None:
        """The entry recorded under ``key``, or ``None``."""
        with self._db_lock:
            row = self._db.execute("SELECT * FROM outbox WHERE key = ?", (key,)).fetchone()
        return self._entry(row) if row else None

    def entries(self, state: OutboxState | None = None) -> list[OutboxEntry]:
        """All entries in enqueue order, or those in ``state``."""
        query = "SELECT * FROM outbox" + (" WHERE state = ?" if state else "") + " ORDER BY seq"
        with self._db_lock:
            rows = self._db.execute(query, (state,) if state else ()).fetchall()
        return [self._entry(row) for row in rows]

    def counts(self) -> dict[OutboxState, int]:
        """How many entries are in each state."""
        with self._db_lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        found = {OutboxState(state): count for state, count in rows}
        return {state: found.get(state, 0) for state in OutboxState}

    def pending(self) -> int:
        """How many entries are queued or sent but not yet final."""
        counts = self.counts()
        return sum(counts[state] for state in OPEN_STATES)

    def _next_open(self) -> OutboxEntry | None:
        with self._db_lock:
            row = self._db.execute(
                "SELECT * FROM outbox WHERE state IN (?, ?) ORDER BY seq LIMIT 1", OPEN_STATES
            ).fetchone()
        return self._entry(row) if row else None

    # ---- sending -------------------------------------------------------------------------------------

    def process_next(self) -> bool:
        """Bring the oldest open entry to a final state (or raise a transient failure). False if none."""
        entry = self._next_open()
        if entry is None:
            return False
        try:
            if entry.state is OutboxState.SENT:
                self._resume_sent(entry)
            else:
                self._send_queued(entry)
        except (
            ChainUnreachableError,
            RequestException,
            ConnectionError,
            TimeoutError,
            Web3RPCError,
        ) as error:
            self._note_error(entry, f"{type(error).__name__}: {error}")
            raise _Transient(str(error)) from error
        return True

    def _note_error(self, entry: OutboxEntry, message: str) -> None:
        self.last_error = message
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE key = ?",
                (message, entry.key),
            )

    def _is_already_done(self, entry: OutboxEntry) -> bool:
        check = self.already_done.get(entry.purpose)
        return bool(check and check(entry))

    def _send_queued(self, entry: OutboxEntry) -> None:
        if self._is_already_done(entry):
            self._finish(entry, OutboxState.ALREADY_DONE, None)
            return
        try:
            signed = self.client.sign(entry.target, entry.calldata, entry.value_wei)
        except TransactionRevertedError as error:
            self._finish(entry, OutboxState.FAILED, None, error=error.reason)
            return
        # Recorded (and fsynced) before it leaves the process: see the module docstring, point 1.
        self._update(
            entry.key,
            state=OutboxState.SENT,
            tx_hash=signed.tx_hash,
            raw_tx=signed.raw,
            nonce=signed.nonce,
            gas_limit=signed.gas_limit,
            gas_estimate=signed.gas_estimate,
            sent_at=format_utc(utc_now()),
        )
        entry = self.get(entry.key) or entry
        self._broadcast_and_wait(entry, signed)

    def _resume_sent(self, entry: OutboxEntry) -> None:
        assert entry.tx_hash is not None
        receipt = self.client.receipt(entry.tx_hash)
        if receipt is not None:
            self._finish_with_receipt(entry, receipt)
            return
        with self._db_lock:
            raw = self._db.execute("SELECT raw_tx FROM outbox WHERE key = ?", (entry.key,)).fetchone()[0]
        signed = SignedTransaction(
            tx_hash=entry.tx_hash,
            raw=bytes(raw),
            nonce=int(entry.nonce or 0),
            gas_limit=int(entry.gas_limit or 0),
            gas_estimate=int(entry.gas_estimate or 0),
            to=entry.target,
            value=entry.value_wei,
        )
        self._broadcast_and_wait(entry, signed)

    def _broadcast_and_wait(self, entry: OutboxEntry, signed: SignedTransaction) -> None:
        try:
            self.client.broadcast(signed)
        except NonceConsumedError:
            # The recorded transaction can never be mined. Sign again unless the effect is there.
            log.warning("outbox %s: nonce %d was taken by another transaction", entry.key, signed.nonce)
            self._update(entry.key, state=OutboxState.QUEUED, tx_hash=None, raw_tx=None, nonce=None)
            return
        deadline = time.monotonic() + self.receipt_wait
        while not self._stop.is_set():
            receipt = self.client.receipt(signed.tx_hash)
            if receipt is not None:
                self._finish_with_receipt(entry, receipt)
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no receipt for {signed.tx_hash} within {self.receipt_wait:.0f} s")
            time.sleep(self.client.poll_interval)

    def _finish_with_receipt(self, entry: OutboxEntry, receipt: TxResult) -> None:
        if receipt.status:
            self._finish(entry, OutboxState.CONFIRMED, receipt)
        elif self._is_already_done(entry):
            self._finish(entry, OutboxState.ALREADY_DONE, receipt)
        else:
            self._finish(entry, OutboxState.FAILED, receipt, error="reverted on chain")

    def _finish(
        self, entry: OutboxEntry, state: OutboxState, receipt: TxResult | None, error: str | None = None
    ) -> None:
        fields: dict[str, object] = {"state": state, "done_at": format_utc(utc_now())}
        if receipt is not None:
            fields |= {"block_number": receipt.block_number, "gas_used": receipt.gas_used}
        if error is not None:
            fields["last_error"] = error
        self._update(entry.key, **fields)
        level = logging.ERROR if state is OutboxState.FAILED else logging.INFO
        log.log(level, "outbox %s (%s): %s%s", entry.key, entry.purpose, state, f": {error}" if error else "")
        finished = self.get(entry.key)
        if self.on_finished and finished:
            self.on_finished(finished)

    # ---- the sender thread ---------------------------------------------------------------------------

    def run_until_empty(self, timeout: float | None = None) -> bool:
        """Send in the calling thread until nothing is open (True) or ``timeout`` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = self.backoff_initial
        while True:
            try:
                if not self.process_next():
                    return True
                backoff = self.backoff_initial
            except _Transient as error:
                log.warning("outbox: chain not reachable (%s); retrying in %.1f s", error, backoff)
                if deadline is not None and time.monotonic() + backoff > deadline:
                    return False
                if self._stop.wait(backoff):
                    return False
                backoff = min(backoff * 2, self.backoff_max)
            if deadline is not None and time.monotonic() > deadline:
                return self.pending() == 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_until_empty()
            if self._stop.is_set():
                break
            self._wake.wait(self.idle_poll)
            self._wake.clear()

    def start(self) -> Outbox:
        """Start the background sender thread (a daemon; call :meth:`stop` to end it)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="hypergpu-outbox", daemon=True)
            self._thread.start()
        return self

    def wait_until_empty(self, timeout: float) -> bool:
        """Wait (up to ``timeout`` seconds) until the sender thread has nothing open. True if so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending() == 0:
                return True
            time.sleep(0.05)
        return self.pending() == 0

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the sender thread; open entries stay recorded and are sent by the next sender."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def close(self) -> None:
        """Stop the sender and close the database."""
        self.stop()
        with self._db_lock:
            self._db.close()
