"""The chain side of HyperGPU: Monad (EVM) attestation and rewards. Nothing here imports hivemind or torch.

- ``networks``: networks by name (local, monad-testnet, monad), the ``[chain]`` section, explorer links.
- ``client``: ``ChainClient`` (web3.py): gas limit = estimate + 10 %, EIP-1559, local nonce, retries.
- ``outbox``: durable SQLite outbox: every write recorded before it is sent, landed exactly once.
- ``attestation``: the HyperGPUAttestation contract: typed reads, encoded calls, EIP-712 node bindings.
- ``merkle``: the cumulative-rewards tree (OpenZeppelin StandardMerkleTree compatible).
- ``wallet``: the encrypted keystore; ``proofs``: reward proofs from coordinator_lite.
- ``deploy``: deploy from the shipped artifacts (``abi/``); ``anvil``: a local chain for demos and tests.

Import the sub-modules directly; this package stays empty so that reading configuration does not pull
in web3.
"""
