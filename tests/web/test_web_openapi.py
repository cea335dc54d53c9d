"""Schemathesis against /openapi.json: generated requests to every operation
(signed in as a member with points, or as a shop till) get no server error,
and every answer matches the schema: status code, content type, body."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.web.conftest import ALICE, BOB, member_with_points

pytestmark = pytest.mark.postgres
EXAMPLES_PER_OPERATION = 12  # bounded: the whole run stays well under a minute


@pytest.fixture
def api_schema(web_app):
    return schemathesis.openapi.from_asgi("/openapi.json", web_app)


@pytest.fixture
def caller(client, programme):
    """Bearer headers for an operation: a shop till's key for /pos, else a
    new token of a member with points (new, as one operation is logout)."""
    member_with_points(programme, ALICE, 5000)
    member_with_points(programme, BOB, 0)
    auth = client.app.state.context.auth
    store_key = auth.add_store("S1")

    def headers(path: str) -> dict[str, str]:
        token = store_key if path.startswith("/api/v1/pos/") else auth.open_session(ALICE, "api", "code")[0]
        return {"Authorization": f"Bearer {token}"}

    return headers


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_the_api_answers_as_its_openapi_schema_says(api_schema, caller):
    """Every operation in turn, in one database. (Schemathesis's pytest
    plugin, `from_fixture`, does not run under pytest 9, so the operations'
    strategies are driven with hypothesis directly.)"""
    failures, calls = {}, []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20

    for operation in operations:
        try:
            exercise(operation, caller(operation.path), calls)
        except Exception as failure:  # collect them all, then report
            failures[f"{operation.method.upper()} {operation.path}"] = failure
    assert len(calls) >= 5 * len(operations), "the strategies generated too few requests"
    assert not failures, "\n\n".join(f"{label}:\n{failure}" for label, failure in failures.items())


def exercise(operation, headers: dict[str, str], calls: list) -> None:
    """Generated requests to one operation, each checked against the schema."""

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def answers_as_described(case):
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        calls.append((operation.label, response.status_code))

    answers_as_described()
