"""Reads never write (issue 11, item 1): pages and the API read the read
models on read-only connections, take no lock a projector or an ingest
holds, and still see a member's own command at once (read-your-writes)."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

from accrual.settings import parse_database_url
from tests.web.conftest import ALICE, BOB, START, member_with_points, sign_in

pytestmark = pytest.mark.postgres


def test_a_read_waits_for_no_projector_that_holds_the_read_models_position(client, programme, postgres_url):
    member_with_points(programme, ALICE, 300)
    headers = sign_in(client, ALICE)
    url = parse_database_url(postgres_url)
    # given: a projector (an ingest's, the worker's) in the middle of writing
    # the read models: it holds their position row, and the log has events
    # the read models do not show yet
    with psycopg.connect(host=url.host, port=url.port, user=url.user, password=url.password,
                         dbname=url.dbname) as projector:
        projector.execute("SELECT position FROM rm_tracking FOR UPDATE")
        client.app.state.context.runtime.app.enroll_member(BOB, "shop", START)
        # when: a member reads the account
        answers: list = []
        reader = threading.Thread(target=lambda: answers.append(client.get("/api/v1/me", headers=headers)))
        started = time.monotonic()
        reader.start()
        reader.join(10)
        took = time.monotonic() - started
        projector.rollback()
    # then: the answer came without waiting for the projector's transaction
    assert answers and answers[0].status_code == 200 and answers[0].json()["balance"] == 300
    assert took < 5, f"the read waited {took:.1f} s for the projector's lock"


def test_the_read_connections_cannot_write(client, programme):
    member_with_points(programme, ALICE, 10)
    reads = client.app.state.context.cabinet.connections.reads()
    assert reads.db.query("SHOW transaction_read_only") == [("on",)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        reads.db.query("UPDATE rm_members SET balance = balance + 1")
    assert reads.member(ALICE)["balance"] == 10


def test_a_member_sees_their_own_order_and_transfer_at_once(client, programme):
    member_with_points(programme, ALICE, 500)
    member_with_points(programme, BOB, 0)
    alice = sign_in(client, ALICE)
    ordered = client.post("/api/v1/orders", headers=alice, json={"item_id": "gudok-month", "idempotency_key": "o1"})
    assert ordered.status_code == 201
    spent = ordered.json()["points"]
    assert client.get("/api/v1/me", headers=alice).json()["balance"] == 500 - spent
    assert [o["order_id"] for o in client.get("/api/v1/orders", headers=alice).json()] == [ordered.json()["order_id"]]
    offered = client.post("/api/v1/transfers", headers=alice,
                          json={"recipient": BOB, "points": 50, "idempotency_key": "t1"})
    assert offered.status_code == 201
    assert client.get("/api/v1/me", headers=alice).json()["balance"] == 500 - spent - 50
    assert [t["transfer_id"] for t in client.get("/api/v1/transfers", headers=alice).json()] == [
        offered.json()["transfer_id"]]
