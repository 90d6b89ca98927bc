"""Fixtures for the chain tests: a real anvil per test (it starts in about 0.1 s) and funded dev keys.

Tests skip, saying why, only when the anvil binary is not installed (``npm ci`` installs it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.chain.anvil import AnvilProcess, find_anvil
from agent.chain.client import ChainClient


@pytest.fixture
def anvil() -> Iterator[AnvilProcess]:
    """A fresh anvil with 20 funded development accounts, stopped after the test."""
    if find_anvil() is None:
        pytest.skip("anvil is not installed: run scripts/setup (npm ci installs @foundry-rs/anvil)")
    with AnvilProcess(accounts=20) as chain:
        yield chain


@pytest.fixture
def client(anvil: AnvilProcess) -> ChainClient:
    """A client signing with anvil's first development account."""
    return ChainClient(anvil.rpc_url, anvil.dev_keys[0], expected_chain_id=31337, poll_interval=0.02)
