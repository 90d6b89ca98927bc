"""python tests/chain/outbox_sender_proc.py DB RPC_URL RECIPIENT COUNT — an outbox sender in its own process.

Enqueues COUNT transfers of 1 wei to RECIPIENT (idempotency keys ``transfer-0`` ...), then drains the
outbox. The signing key comes from ``HYPERGPU_TEST_PRIVATE_KEY`` (never argv). The outbox tests kill
this process with SIGKILL between sending and receipt, then start it again on the same database.
With ``--already-done-by-balance`` a transfer counts as done when RECIPIENT holds more than its index.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from agent.chain.client import ChainClient
from agent.chain.outbox import Outbox, OutboxEntry


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("rpc_url")
    parser.add_argument("recipient")
    parser.add_argument("count", type=int)
    parser.add_argument("--already-done-by-balance", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    client = ChainClient(args.rpc_url, os.environ["HYPERGPU_TEST_PRIVATE_KEY"], poll_interval=0.02)

    def transfer_landed(entry: OutboxEntry) -> bool:
        index = int(entry.key.removeprefix("transfer-"))
        return client.balance(args.recipient) > index

    checks = {"transfer": transfer_landed} if args.already_done_by_balance else {}
    outbox = Outbox(args.db, client, already_done=checks, receipt_wait=120, backoff_initial=0.1)
    for index in range(args.count):
        outbox.enqueue(f"transfer-{index}", args.recipient, b"", purpose="transfer", value_wei=1)
    print("enqueued", flush=True)
    drained = outbox.run_until_empty(timeout=120)
    print("drained" if drained else "timeout", flush=True)
    outbox.close()
    return 0 if drained else 1


if __name__ == "__main__":
    sys.exit(main())
