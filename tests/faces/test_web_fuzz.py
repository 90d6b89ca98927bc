"""Fuzz the agent API's OpenAPI schema with schemathesis: no input may cause a server error (5xx), and
every answer must match its documented status codes, content types and response models.

The event stream is left out (it never ends); the action endpoints are fuzzed with and without the
token by schemathesis's own generated headers.
"""

from __future__ import annotations

import schemathesis
from faces_fakes import FakeActions
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agent.faces.demo import demo_board
from agent.faces.web import create_app

_board = demo_board(points=30)
_app = create_app(
    _board, action_token="fuzz-token-123", actions=FakeActions(_board, claim_error="nothing to claim")
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app).exclude(path="/api/events")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_fuzz_no_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
    )
