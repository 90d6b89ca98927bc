"""Signed round reports and group receipts: signatures, domains, receipts and the compact encoding."""

from __future__ import annotations

from datetime import UTC, datetime

import msgpack
import pytest
from eth_account import Account
from pydantic import ValidationError

from agent.protocol.bindings import (
    NodeBinding,
    decode_node_binding,
    encode_node_binding,
    sign_node_binding,
    verify_node_binding,
)
from agent.protocol.messages import AveragingRoundReport
from agent.protocol.reports import (
    OFFCHAIN_DOMAIN,
    GroupReceipt,
    ReportDomain,
    ReportError,
    RoundReport,
    SignedRoundReport,
    build_group_receipt,
    decode_group_receipt,
    decode_signed_report,
    encode_group_receipt,
    encode_signed_report,
    peer_list_hash,
    sign_round_report,
    verify_signed_report,
)

LEDGER = ReportDomain(chain_id=31337, verifying_contract="0x5FbDB2315678afecb367f032d93F642f64180aa3")
GROUP = "9f" * 20
# base58 peer ids of the length libp2p uses (Ed25519 "12D3KooW..." ids are 52 characters)
MEMBERS = tuple(f"12D3KooW{i:044d}" for i in range(8))
ACCOUNTS = [Account.from_key(bytes([i + 1]) * 32) for i in range(8)]


def make_report(member: int = 0, **changes) -> RoundReport:
    fields = dict(
        run_id="mnist-demo",
        round=7,
        group_id=GROUP,
        members=MEMBERS,
        peer_id=MEMBERS[member],
        samples=1024,
        compute_ms=1500,
        bytes_sent=3_000_000,
        bytes_received=3_000_000,
        update_norm_micro=812_000,
        timestamp=1_795_000_000,
    )
    fields.update(changes)
    return RoundReport(**fields)


def signed_group(domain: ReportDomain = LEDGER) -> list[SignedRoundReport]:
    return [sign_round_report(ACCOUNTS[i], make_report(i), domain) for i in range(len(MEMBERS))]


def test_signature_round_trip_recovers_the_signer():
    signed = sign_round_report(ACCOUNTS[0], make_report(0), LEDGER)
    assert verify_signed_report(signed, LEDGER, expected_run_id="mnist-demo") == ACCOUNTS[0].address
    assert len(signed.signature) == 65


@pytest.mark.parametrize(
    "tamper",
    [
        {"samples": 10_240},
        {"compute_ms": 15_000},
        {"round": 8},
        {"members": (*MEMBERS[:7], "12D3KooWintruder")},
        {"flagged": (MEMBERS[3],)},
        {"bytes_received": 1},
    ],
)
def test_an_altered_report_no_longer_verifies(tamper):
    signed = sign_round_report(ACCOUNTS[0], make_report(0), LEDGER)
    altered = signed.model_copy(update={"report": signed.report.model_copy(update=tamper)})
    with pytest.raises(ReportError, match="does not match its signer"):
        verify_signed_report(altered, LEDGER)


def test_a_report_claiming_another_wallet_is_rejected():
    signed = sign_round_report(ACCOUNTS[0], make_report(0), LEDGER)
    forged = signed.model_copy(update={"signer_address": ACCOUNTS[1].address})
    with pytest.raises(ReportError, match="forged"):
        verify_signed_report(forged, LEDGER)


def test_a_signature_for_another_chain_or_contract_does_not_verify():
    signed = sign_round_report(ACCOUNTS[0], make_report(0), OFFCHAIN_DOMAIN)
    with pytest.raises(ReportError):
        verify_signed_report(signed, LEDGER)
    other_contract = LEDGER.model_copy(update={"verifying_contract": "0x" + "11" * 20})
    with pytest.raises(ReportError):
        verify_signed_report(sign_round_report(ACCOUNTS[0], make_report(0), other_contract), LEDGER)


def test_a_report_of_another_run_is_rejected():
    signed = sign_round_report(ACCOUNTS[0], make_report(0, run_id="other-run"), LEDGER)
    with pytest.raises(ReportError, match="other-run"):
        verify_signed_report(signed, LEDGER, expected_run_id="mnist-demo")


def test_garbage_signature_is_a_report_error_not_a_crash():
    signed = sign_round_report(ACCOUNTS[0], make_report(0), LEDGER)
    broken = signed.model_copy(update={"signature": b"\xff" * 65})
    with pytest.raises(ReportError):
        verify_signed_report(broken, LEDGER)


def test_members_are_sorted_and_the_hash_ignores_order():
    report = make_report(0, members=tuple(reversed(MEMBERS)))
    assert report.members == tuple(sorted(MEMBERS))
    assert peer_list_hash(reversed(MEMBERS)) == peer_list_hash(MEMBERS) == report.members_hash
    assert peer_list_hash(MEMBERS[:7]) != report.members_hash


def test_report_validation_names_the_problem():
    with pytest.raises(ValidationError, match="not one of the group's members"):
        make_report(0, peer_id="12D3KooWstranger")
    with pytest.raises(ValidationError, match="duplicate"):
        make_report(0, members=(*MEMBERS, MEMBERS[0]))
    with pytest.raises(ValidationError, match="not members"):
        make_report(0, flagged=("12D3KooWstranger",))
    with pytest.raises(ValidationError):
        make_report(0, samples=-1)
    with pytest.raises(ValidationError):
        make_report(0, samples=2**64)


def test_from_averaging_round_converts_units_and_refuses_failed_rounds():
    when = datetime(2026, 11, 28, 6, 0, 0, tzinfo=UTC)
    base = AveragingRoundReport(
        run_id="mnist-demo",
        round=3,
        group_id=GROUP.upper(),
        members=MEMBERS[1:3],
        samples=640,
        compute_seconds=1.2345,
        wait_seconds=0.3,
        bytes_sent=10,
        bytes_received=20,
        success=True,
        timestamp=when,
    )
    report = RoundReport.from_averaging_round(base, MEMBERS[0], update_norm=0.5, flagged=[MEMBERS[2]])
    assert report.compute_ms == 1234 or report.compute_ms == 1235
    assert report.group_id == GROUP and report.members == tuple(sorted(MEMBERS[:3]))
    assert report.update_norm_micro == 500_000 and report.timestamp == int(when.timestamp())
    with pytest.raises(ReportError, match="failed"):
        RoundReport.from_averaging_round(base.model_copy(update={"success": False}), MEMBERS[0])


def test_group_receipt_round_trip_and_size():
    receipt = build_group_receipt(7, signed_group())
    data = encode_group_receipt(receipt)
    assert decode_group_receipt(data) == receipt
    assert len(data) < 2500, f"a receipt of 8 must stay a few KB, got {len(data)} bytes"
    for signed in decode_group_receipt(data).reports:
        verify_signed_report(signed, LEDGER)


def test_single_report_encoding_round_trip():
    signed = sign_round_report(ACCOUNTS[2], make_report(2, flagged=(MEMBERS[5],)), LEDGER)
    data = encode_signed_report(signed)
    assert decode_signed_report(data) == signed
    assert len(data) < 1000


def test_build_group_receipt_rejects_mixed_groups_and_conflicting_copies():
    reports = signed_group()
    other_group = sign_round_report(ACCOUNTS[1], make_report(1, group_id="ab" * 20), LEDGER)
    with pytest.raises(ReportError, match="another run, group or member list"):
        build_group_receipt(7, [reports[0], other_group])
    changed = sign_round_report(ACCOUNTS[0], make_report(0, samples=1), LEDGER)
    with pytest.raises(ReportError, match="two different reports"):
        build_group_receipt(7, [reports[0], changed])
    assert len(build_group_receipt(7, [reports[0], reports[0], reports[1]]).reports) == 2


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01garbage",
        msgpack.packb([2, "R", "mnist-demo", 1, GROUP, list(MEMBERS), []]),
        msgpack.packb([1, "B", "mnist-demo", 1, GROUP, list(MEMBERS), []]),
        msgpack.packb([1, "R", "mnist-demo", 1, GROUP, list(MEMBERS), [[1, 2, 3]]]),
        msgpack.packb({"a": 1}),
    ],
)
def test_malformed_receipts_raise_report_error(data):
    with pytest.raises(ReportError):
        decode_group_receipt(data)


def test_receipt_refuses_duplicate_member_reports():
    reports = signed_group()
    with pytest.raises(ValidationError, match="at most one report per member"):
        GroupReceipt(run_id="mnist-demo", round=7, group_id=GROUP, members=MEMBERS, reports=(reports[0],) * 2)


def test_node_binding_sign_verify_encode():
    binding = NodeBinding(
        run_id="mnist-demo",
        peer_id=MEMBERS[0],
        wallet=ACCOUNTS[0].address.lower(),
        device="cpu",
        hardware_name="AMD EPYC",
        benchmark_samples_per_s=5400,
        timestamp=1_795_000_000,
    )
    signed = sign_node_binding(ACCOUNTS[0], binding, LEDGER)
    assert verify_node_binding(signed, LEDGER, expected_run_id="mnist-demo") == ACCOUNTS[0].address
    assert decode_node_binding(encode_node_binding(signed)) == signed
    stolen = signed.model_copy(update={"binding": binding.model_copy(update={"peer_id": MEMBERS[1]})})
    with pytest.raises(ReportError, match="not signed by that wallet"):
        verify_node_binding(stolen, LEDGER)
    with pytest.raises(ReportError, match="signed by"):
        sign_node_binding(ACCOUNTS[1], binding, LEDGER)
    with pytest.raises(ReportError):
        decode_node_binding(b"\x93\x01\x02")
