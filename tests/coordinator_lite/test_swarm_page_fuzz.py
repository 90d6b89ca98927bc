"""Fuzz the coordinator's OpenAPI schema (proofs, epochs, agents, the swarm page's routes) with
schemathesis: no input may cause a server error, and every answer must match its documented models."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from swarm_page_fixtures import closed_state

from coordinator_lite.api import create_app

_folder = tempfile.TemporaryDirectory(prefix="coordinator-fuzz-")
_app = create_app(closed_state(Path(_folder.name), extra_bound_peer=True), proofs_need_chain=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_coordinator_api_fuzz_no_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
    )


def test_an_epoch_number_beyond_sqlite_integers_is_refused_not_a_server_error() -> None:
    client = TestClient(_app, raise_server_exceptions=False)
    assert client.get(f"/api/epochs/{2**63}").status_code == 422  # was a 500 (OverflowError in sqlite3)
    assert client.get("/api/epochs/-1").status_code == 422
    assert client.get("/api/epochs/0").status_code == 200
