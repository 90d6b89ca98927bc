"""HyperGPU agent: decentralized training on hivemind with attestation on Monad."""

__version__ = "0.1.0"
