"""The personal account through a database outage: every session of its
database ends (what a PostgreSQL restart or failover does to a client).
Requests answer 503 with Retry-After while a connection is found dead, never
500, and the service recovers by itself."""
from __future__ import annotations

import pytest

from tests.test_worker_faults import terminate_sessions
from tests.web.conftest import ALICE, member_with_points, sign_in
from tests.web.test_web_pages import page_sign_in

pytestmark = pytest.mark.postgres


def answers_until_recovered(client, path, headers=None, tries=10):
    answers = []
    for _ in range(tries):
        answer = client.get(path, headers=headers)
        answers.append(answer)
        if answer.status_code == 200:
            break
    return answers


def test_the_api_answers_503_during_an_outage_and_recovers_by_itself(client, programme, postgres_url):
    member_with_points(programme, ALICE, 300)
    headers = sign_in(client, ALICE)
    assert client.get("/api/v1/me", headers=headers).json()["balance"] == 300
    # when: every session of the database ends
    assert terminate_sessions(postgres_url) >= 1
    # then: no 500; a refused request says to come back, and the service recovers
    answers = answers_until_recovered(client, "/api/v1/me", headers)
    assert answers[0].status_code == 503  # the first request meets a dead session
    assert {a.status_code for a in answers} <= {200, 503}
    for refused in (a for a in answers if a.status_code == 503):
        assert refused.json()["error"] == "store_unavailable" and refused.headers["Retry-After"] == "5"
        assert refused.headers["x-frame-options"] == "DENY"
    assert answers[-1].status_code == 200 and answers[-1].json()["balance"] == 300
    # and writes work again: an order after the outage is taken once
    ordered = client.post("/api/v1/orders", headers=headers, json={"item_id": "gudok-month", "idempotency_key": "o1"})
    assert ordered.status_code == 201


def test_a_page_says_so_in_russian_during_an_outage(client, programme, postgres_url):
    member_with_points(programme, ALICE, 300)
    page_sign_in(client)
    terminate_sessions(postgres_url)
    answers = answers_until_recovered(client, "/account")
    assert answers[0].status_code == 503
    assert {a.status_code for a in answers} <= {200, 503}
    for refused in (a for a in answers if a.status_code == 503):
        assert "временно недоступен" in refused.text
    assert answers[-1].status_code == 200


def test_the_probes_say_alive_and_ready_and_not_ready_while_the_store_is_gone(client, postgres_url):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    terminate_sessions(postgres_url)
    # the probe's own connection was ended: not ready, then ready again on a new session
    first = client.get("/readyz")
    assert first.status_code == 503 and first.json()["checks"] == {"store": False}
    assert client.get("/healthz").status_code == 200  # alive all along: nothing to restart
    assert client.get("/readyz").status_code == 200
