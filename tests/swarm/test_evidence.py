"""Receipts and bindings published by one DHT peer are read back by another (real hivemind DHTs)."""

from __future__ import annotations

import time

import pytest
from eth_account import Account
from hivemind import DHT
from hivemind.utils.timed_storage import get_dht_time

from agent.chain.networks import ChainConfig
from agent.protocol.bindings import verify_node_binding
from agent.protocol.messages import AveragingRoundReport, Hardware
from agent.protocol.reports import OFFCHAIN_DOMAIN, RoundReport, build_group_receipt, sign_round_report
from agent.swarm.evidence import (
    EvidencePublisher,
    read_bindings,
    read_evidence,
    receipts_key,
    report_domain,
)

MEMBERS = ("12D3KooWAlice", "12D3KooWBob")
ACCOUNTS = [Account.from_key(bytes([i + 1]) * 32) for i in range(2)]


@pytest.fixture(scope="module")
def dhts():
    first = DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    second = DHT(start=True, initial_peers=first.get_visible_maddrs(), host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    yield first, second
    second.shutdown()
    first.shutdown()


def signed_report(member: int, round_: int, group: str):
    report = RoundReport(
        run_id="evidence-test",
        round=round_,
        group_id=group,
        members=MEMBERS,
        peer_id=MEMBERS[member],
        samples=100,
        compute_ms=200,
        timestamp=int(time.time()),
    )
    return sign_round_report(ACCOUNTS[member], report, OFFCHAIN_DOMAIN)


@pytest.mark.timeout(60)
def test_receipts_and_bindings_travel_through_the_dht(dhts):
    publisher_dht, reader_dht = dhts
    publisher = EvidencePublisher(publisher_dht, expiration_s=600)
    receipt = build_group_receipt(1, [signed_report(0, 1, "aa" * 8), signed_report(1, 1, "aa" * 8)])
    assert publisher.publish_receipt(receipt, MEMBERS[0], wait=True)
    assert publisher.publish_report(signed_report(1, 2, "bb" * 8), wait=True)
    # what the training loop calls after a round: sign + publish, fire and forget
    own = AveragingRoundReport(
        run_id="evidence-test", round=2, group_id="BB" * 8, members=MEMBERS, samples=100, compute_seconds=0.2,
        wait_seconds=0.1, bytes_sent=1, bytes_received=1, success=True,
    )  # fmt: skip
    signed = publisher.publish_round(ACCOUNTS[0], own, MEMBERS[0], OFFCHAIN_DOMAIN, update_norm=1.5)
    assert signed.report.group_id == "bb" * 8 and signed.report.update_norm_micro == 1_500_000
    hardware = Hardware(device="cuda:0", name="NVIDIA H100", memory_mb=80_000, cpu_threads=8)
    node = publisher.publish_node(
        ACCOUNTS[0], "evidence-test", MEMBERS[0], hardware, OFFCHAIN_DOMAIN, benchmark_samples_per_s=5400.4,
        wait=True,
    )  # fmt: skip
    assert node.binding.device == "cuda" and node.binding.benchmark_samples_per_s == 5400
    assert verify_node_binding(node, OFFCHAIN_DOMAIN) == ACCOUNTS[0].address
    # a record that is not a receipt is reported, not fatal
    now = get_dht_time()
    reader_dht.store(receipts_key("evidence-test", int(now // 60)), b"junk", now + 60, subkey="9:zz:x")

    deadline = time.monotonic() + 10
    while True:
        found = read_evidence(reader_dht, "evidence-test", since=now - 120)
        if len(found.receipts) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted((r.group_id, len(r.reports)) for r in found.receipts) == [
        ("aa" * 8, 2),
        ("bb" * 8, 1),
        ("bb" * 8, 1),
    ]
    assert receipt in found.receipts
    assert len(found.malformed) == 1 and found.malformed[0].startswith("9:zz:x")
    bindings, malformed = read_bindings(reader_dht, "evidence-test")
    assert [b.binding.peer_id for b in bindings] == [MEMBERS[0]] and malformed == []
    assert read_evidence(reader_dht, "another-run").receipts == []


def test_report_domain_follows_the_chain_configuration():
    assert report_domain(None) == OFFCHAIN_DOMAIN
    assert report_domain(ChainConfig()) == OFFCHAIN_DOMAIN  # no contract configured
    address = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    domain = report_domain(ChainConfig(network="monad-testnet", attestation_address=address.lower()))
    assert domain.chain_id == 10143 and domain.verifying_contract == address
