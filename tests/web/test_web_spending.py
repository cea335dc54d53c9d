"""The member's flows through the API on PostgreSQL: enrolling, balance and
history, the catalogue and orders, transfers, shop tills."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from web.app import create_app

from tests.conftest import settings_for
from tests.web.conftest import ALICE, BOB, CAROL, last_code, member_with_points, sign_in

pytestmark = pytest.mark.postgres


def balance(client, headers) -> int:
    return client.get("/api/v1/me", headers=headers).json()["balance"]


def order(client, headers, item="gudok-month", key="k1", **extra):
    return client.post("/api/v1/orders", headers=headers, json={"item_id": item, "idempotency_key": key, **extra})


def test_registering_from_the_personal_account_enrolls_the_member_by_web(client, programme):
    headers = sign_in(client, ALICE)
    assert client.get("/api/v1/me", headers=headers).json()["enrolled"] is False
    assert client.post("/api/v1/me/enroll", headers=headers).json() == {"status": "applied"}
    assert client.post("/api/v1/me/enroll", headers=headers).json() == {"status": "duplicate"}
    me = client.get("/api/v1/me", headers=headers).json()
    assert me["enrolled"] is True and me["balance"] == 0
    assert programme.runtime.reads.member(ALICE)["channel"] == "web"
    history = client.get("/api/v1/me/history", headers=headers).json()
    assert [e["kind"] for e in history["items"]] == ["enrolled"]


def test_the_balance_shows_lots_and_the_burn_forecast(client, programme):
    programme.enroll(ALICE, "2025-11-01 10:00")
    programme.ballyplus(ALICE, 40, "2025-12-10 10:00")  # expires 2026-12-10: within 30 days of 2026-11-25
    programme.ballyplus(ALICE, 50, "2026-01-20 10:00")  # 2027-01-20: within 60
    programme.ballyplus(ALICE, 60, "2026-11-20 10:00")  # 2027-11-20: later
    programme.link_mgts("MGTS-1", ALICE, "2026-02-01 10:00")
    me = client.get("/api/v1/me", headers=sign_in(client, ALICE)).json()
    assert me["balance"] == 150
    assert [(lot["expires_on"], lot["remaining"]) for lot in me["lots"]] == [
        ("2026-12-10", 40), ("2027-01-20", 50), ("2027-11-20", 60)
    ]
    assert me["expiring"] == {"30": 40, "60": 90, "90": 90}
    assert [m["mgts_account"] for m in me["mgts_accounts"]] == ["MGTS-1"]


def test_history_is_filtered_by_kind_and_period_and_paginated(client, programme):
    programme.enroll(ALICE, "2026-01-01 10:00")
    for day in range(1, 26):
        programme.ballyplus(ALICE, day, f"2026-03-{day:02d} 10:00")
    headers = sign_in(client, ALICE)
    page = client.get("/api/v1/me/history", headers=headers, params={"kind": "accrued", "per_page": 10, "page": 2}).json()
    assert page["total"] == 25 and [e["points"] for e in page["items"]] == list(range(15, 5, -1))
    assert all(e["rule"] == "ballyplus" and e["source_event_id"] for e in page["items"])
    period = client.get("/api/v1/me/history", headers=headers, params={"since": "2026-03-10", "until": "2026-03-12"}).json()
    assert [e["points"] for e in period["items"]] == [12, 11, 10]
    enrolled = client.get("/api/v1/me/history", headers=headers, params={"kind": "enrolled"}).json()
    assert enrolled["total"] == 1


def test_how_to_earn_comes_from_the_rules_file(client):
    earning = client.get("/api/v1/earn").json()
    assert earning["rules_version"] == "2026.1-default"
    assert {s["source"] for s in earning["sources"]} == {"usage", "shop", "mgts", "card", "ballyplus"}
    assert "1 балл за каждые 5 ₽" in earning["sources"][0]["rate"]


def test_offers_are_shown_while_valid(client, clock):
    assert [o["offer_id"] for o in client.get("/api/v1/offers").json()] == ["always-gudok"]
    clock.advance(days=7)  # 2026-12-02
    assert [o["offer_id"] for o in client.get("/api/v1/offers").json()] == ["winter-2026", "always-gudok"]


def test_the_catalogue_has_the_seeds_categories(client):
    catalog = client.get("/api/v1/catalog").json()
    assert [c["title"] for c in catalog["categories"]] == [
        "Услуги связи", "Мелодии вместо гудков", "Техника", "Развлечения", "Предложения партнёров",
        "МТС Книги", "Игры", "МГТС", "МТС Банк",
    ]
    assert {r["category"] for r in catalog["rewards"]} == {c["id"] for c in catalog["categories"]}
    books = client.get("/api/v1/catalog", params={"category": "books"}).json()["rewards"]
    assert [r["item_id"] for r in books] == ["books-month"]


def test_ordering_a_gift_debits_its_price_once_per_key(client, programme):
    member_with_points(programme, ALICE, 500)
    headers = sign_in(client, ALICE)
    placed = order(client, headers)
    assert placed.status_code == 201
    body = placed.json()
    assert (body["status"], body["points"], body["balance_after"], body["title"]) == ("placed", 100, 400, "«Гудок»: мелодия на месяц")
    again = order(client, headers)
    assert again.status_code == 200 and again.json()["order_id"] == body["order_id"] and again.json()["duplicate"]
    assert balance(client, headers) == 400
    assert client.get(f"/api/v1/orders/{body['order_id']}", headers=headers).json()["status"] == "placed"
    assert [o["order_id"] for o in client.get("/api/v1/orders", headers=headers).json()] == [body["order_id"]]
    redeemed = client.get("/api/v1/me/history", headers=headers, params={"kind": "redeemed"}).json()["items"]
    assert [e["points"] for e in redeemed] == [-100]


def test_one_key_for_another_gift_is_refused(client, programme):
    member_with_points(programme, ALICE, 500)
    headers = sign_in(client, ALICE)
    order(client, headers, key="same")
    refused = order(client, headers, item="minutes-100", key="same")
    assert refused.status_code == 409 and refused.json()["error"] == "idempotency_conflict"
    assert balance(client, headers) == 400


def test_ordering_more_than_the_balance_is_refused_and_changes_nothing(client, programme):
    member_with_points(programme, ALICE, 99)
    headers = sign_in(client, ALICE)
    before = client.get("/api/v1/me", headers=headers).json()
    refused = order(client, headers)
    assert refused.status_code == 409 and refused.json()["error"] == "insufficient_points"
    assert client.get("/api/v1/me", headers=headers).json() == before
    assert client.get("/api/v1/orders", headers=headers).json() == []
    assert client.get("/api/v1/me/history", headers=headers, params={"kind": "redeemed"}).json()["total"] == 0


def test_an_unknown_gift_and_a_non_member_are_refused(client, programme):
    headers = sign_in(client, ALICE)
    assert order(client, headers).json()["error"] == "not_enrolled"
    member_with_points(programme, ALICE, 500)
    assert order(client, headers, item="no-such-gift").status_code == 404


def test_fifty_concurrent_orders_with_one_key_make_one_debit(client, web_app, programme, postgres_url, clock, web_env):
    """Half of them through a second app on the same database, as a second
    web process would be: the engine, not only the process's lock, keeps
    them to one debit."""
    member_with_points(programme, ALICE, 1000)
    headers = sign_in(client, ALICE)
    second = create_app(settings_for(postgres_url, **web_env), clock=clock)

    async def race():
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="https://testserver")
                   for a in (web_app, second)]
        body = {"item_id": "gudok-month", "idempotency_key": "once"}
        try:
            return await asyncio.gather(*[
                clients[i % 2].post("/api/v1/orders", headers=headers, json=body) for i in range(50)
            ])
        finally:
            for http in clients:
                await http.aclose()

    try:
        answers = asyncio.run(race())
    finally:
        second.state.context.close()
    assert sorted(a.status_code for a in answers) == [200] * 49 + [201]
    assert len({a.json()["order_id"] for a in answers}) == 1
    assert balance(client, headers) == 900
    assert len(client.get("/api/v1/orders", headers=headers).json()) == 1


def offer(client, headers, to=BOB, points=30, key="t1"):
    return client.post("/api/v1/transfers", headers=headers, json={"recipient": to, "points": points, "idempotency_key": key})


def test_a_transfer_is_held_until_the_recipient_accepts(client, programme):
    member_with_points(programme, ALICE, 100)
    member_with_points(programme, BOB, 0)
    alice, bob = sign_in(client, ALICE), sign_in(client, BOB)
    offered = offer(client, alice)
    assert offered.status_code == 201 and offered.json()["status"] == "pending"
    transfer_id = offered.json()["transfer_id"]
    assert (balance(client, alice), balance(client, bob)) == (70, 0)
    assert [t["transfer_id"] for t in client.get("/api/v1/transfers", headers=bob).json()] == [transfer_id]
    accepted = client.post(f"/api/v1/transfers/{transfer_id}/accept", headers=bob)
    assert accepted.json()["status"] == "accepted"
    assert (balance(client, alice), balance(client, bob)) == (70, 30)
    assert client.get("/api/v1/me", headers=bob).json()["lots"][0]["expires_on"] == "2027-11-20"  # the sender's expiry


def test_a_declined_transfer_returns_to_the_sender(client, programme):
    member_with_points(programme, ALICE, 100)
    member_with_points(programme, BOB, 0)
    alice, bob = sign_in(client, ALICE), sign_in(client, BOB)
    transfer_id = offer(client, alice).json()["transfer_id"]
    assert client.post(f"/api/v1/transfers/{transfer_id}/decline", headers=bob).json()["status"] == "declined"
    assert (balance(client, alice), balance(client, bob)) == (100, 0)
    assert client.post(f"/api/v1/transfers/{transfer_id}/accept", headers=bob).json()["error"] == "transfer_settled"


def test_a_transfer_not_answered_in_24_hours_returns(client, programme, clock):
    member_with_points(programme, ALICE, 100)
    member_with_points(programme, BOB, 0)
    transfer_id = offer(client, sign_in(client, ALICE)).json()["transfer_id"]
    clock.advance(hours=24, seconds=1)
    alice, bob = sign_in(client, ALICE), sign_in(client, BOB)  # sessions last 12 hours
    assert client.get(f"/api/v1/transfers/{transfer_id}", headers=bob).json()["status"] == "returned"
    refused = client.post(f"/api/v1/transfers/{transfer_id}/accept", headers=bob)
    assert refused.status_code == 409
    assert (balance(client, alice), balance(client, bob)) == (100, 0)


def test_transfers_that_break_rule_10_are_refused(client, programme):
    member_with_points(programme, ALICE, 100)
    alice = sign_in(client, ALICE)
    assert offer(client, alice, to=CAROL).json()["error"] == "recipient_not_enrolled"
    assert offer(client, alice, to=ALICE).json()["error"] == "self_transfer"
    member_with_points(programme, BOB, 0)
    assert offer(client, alice, points=101).json()["error"] == "insufficient_points"
    assert offer(client, alice, points=0).status_code == 422
    assert balance(client, alice) == 100


def test_a_network_session_confirms_spending_with_a_code(gateway_client, programme):
    member_with_points(programme, ALICE, 500)
    token = gateway_client.post("/api/v1/auth/network", json={"accept_terms": True}, headers={"X-MSISDN": ALICE}).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    refused = order(gateway_client, headers)
    assert refused.status_code == 403 and refused.json()["error"] == "confirmation_required"
    gateway_client.post("/api/v1/auth/otp/request", json={"msisdn": ALICE, "purpose": "login"})
    assert order(gateway_client, headers, code=last_code(gateway_client.app, ALICE)).status_code == 403  # another purpose
    anonymous = gateway_client.post("/api/v1/auth/otp/request", json={"msisdn": ALICE, "purpose": "confirm"})
    assert anonymous.status_code == 401  # only the signed-in member asks for confirmations
    gateway_client.post("/api/v1/auth/otp/request", json={"msisdn": ALICE, "purpose": "confirm"}, headers=headers)
    assert order(gateway_client, headers, code=last_code(gateway_client.app, ALICE)).status_code == 201
    assert balance(gateway_client, headers) == 400


def store_headers(client, store_id="S1"):
    return {"Authorization": f"Bearer {client.app.state.context.auth.add_store(store_id)}"}


def pos(client, headers, points=150, key="r1", msisdn=ALICE):
    return client.post("/api/v1/pos/debits", headers=headers, json={"msisdn": msisdn, "points": points, "idempotency_key": key, "receipt_id": "R-1"})


def test_a_shop_till_debits_a_discount_once_and_can_cancel_it(client, programme):
    member_with_points(programme, ALICE, 500)
    shop = store_headers(client)
    debited = pos(client, shop)
    assert debited.status_code == 201 and debited.json()["balance_after"] == 350
    assert pos(client, shop).status_code == 200  # the same key: the same debit
    stored = client.app.state.context.store.query("SELECT key_hash FROM web_stores")[0][0]
    assert shop["Authorization"].split()[1] not in stored
    debit_id = debited.json()["debit_id"]
    cancelled = client.post(f"/api/v1/pos/debits/{debit_id}/cancel", headers=shop)
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["balance_after"] == 500
    assert balance(client, sign_in(client, ALICE)) == 500


def test_a_shop_cannot_cancel_another_shops_debit_nor_use_a_member_token(client, programme):
    member_with_points(programme, ALICE, 500)
    s1, s2 = store_headers(client, "S1"), store_headers(client, "S2")
    debit_id = pos(client, s1).json()["debit_id"]
    assert client.post(f"/api/v1/pos/debits/{debit_id}/cancel", headers=s2).status_code == 404
    assert client.get(f"/api/v1/pos/debits/{debit_id}", headers=s2).status_code == 404
    alice = sign_in(client, ALICE)
    assert pos(client, alice, key="r2").status_code == 401
    assert client.get("/api/v1/me", headers=s1).status_code == 401
    assert pos(client, s1, points=10_000, key="r3").json()["error"] == "insufficient_points"


def test_one_members_token_never_reads_or_spends_anothers(client, programme):
    member_with_points(programme, ALICE, 500)
    member_with_points(programme, BOB, 500)
    member_with_points(programme, CAROL, 0)
    alice, bob = sign_in(client, ALICE), sign_in(client, BOB)
    order_id = order(client, alice).json()["order_id"]
    transfer_id = offer(client, alice, to=CAROL).json()["transfer_id"]
    shop = store_headers(client)
    debit_id = pos(client, shop, points=10).json()["debit_id"]
    for resource in (order_id, transfer_id, debit_id):
        assert client.get(f"/api/v1/orders/{resource}", headers=bob).status_code == 404
        assert client.get(f"/api/v1/transfers/{resource}", headers=bob).status_code == 404
        assert client.post(f"/api/v1/transfers/{resource}/accept", headers=bob).status_code == 404
        assert client.post(f"/api/v1/transfers/{resource}/decline", headers=bob).status_code == 404
        assert client.post(f"/api/v1/pos/debits/{resource}/cancel", headers=bob).status_code == 401
    assert client.post(f"/api/v1/transfers/{transfer_id}/accept", headers=alice).status_code == 404  # the sender
    assert client.get("/api/v1/orders", headers=bob).json() == []
    assert client.get("/api/v1/transfers", headers=bob).json() == []
    assert (balance(client, alice), balance(client, bob)) == (360, 500)
    assert client.get("/api/v1/me/history", headers=bob, params={"kind": "redeemed"}).json()["total"] == 0
