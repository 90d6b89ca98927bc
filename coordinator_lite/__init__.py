"""coordinator_lite: turns the agents' signed round receipts into attested, claimable rewards.

One module per step, data flowing one way: :mod:`.verification` (which rounds count) ->
:mod:`.scoring` (compute x quality x reliability) -> :mod:`.rewards` (pool split, exact to the wei) ->
:mod:`.epochs` (cumulative Merkle root, chain writes through the outbox) with :mod:`.state` (SQLite) and
:mod:`.api` (proofs over HTTP); :mod:`.main` is the ``hypergpu-coordinator`` command. It imports the
protocol types (``agent.protocol``) and the chain client (``agent.chain``), never the training loop.
"""
