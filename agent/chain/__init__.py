"""The chain side of HyperGPU: networks, the web3 client, the durable outbox, the wallet, Merkle proofs.

Nothing here imports hivemind or torch. Import the sub-modules directly (``agent.chain.client`` ...);
this package stays empty so that reading configuration does not pull in web3.
"""
