"""The personal account's commands and settings: `accrual stores add`,
`accrual sms outbox`, the SMS gateways and the web settings."""
from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from accrual.cli import app as cli
from accrual.settings import Settings, SettingsError
from tests.conftest import settings_for
from tests.web.conftest import ALICE, member_with_points
from web.app import create_app
from web.sms import HttpGateway, SmsError


def accrual(url: str, *args: str, **env: str):
    return CliRunner().invoke(cli, list(args), env={"ACCRUAL_DATABASE_URL": url, **env}, catch_exceptions=False)


def test_a_store_key_is_printed_once_and_debits_through_the_api(sqlite_url, clock):
    added = accrual(sqlite_url, "stores", "add", "SHOP-7")
    assert added.exit_code == 0
    key = added.stdout.strip()
    assert key.startswith("sk_") and len(key) > 40
    web = create_app(settings_for(sqlite_url), clock=clock)
    try:
        with TestClient(web, base_url="https://testserver") as client:
            from tests.programme import Programme

            member_with_points(Programme(web.state.context.runtime), ALICE, 300)
            debit = client.post("/api/v1/pos/debits", headers={"Authorization": f"Bearer {key}"},
                                json={"msisdn": ALICE, "points": 120, "idempotency_key": "chk-1"})
            assert debit.status_code == 201 and debit.json()["balance_after"] == 180
            replaced = accrual(sqlite_url, "stores", "add", "SHOP-7").stdout.strip()
            assert replaced != key
            again = client.post("/api/v1/pos/debits", headers={"Authorization": f"Bearer {key}"},
                                json={"msisdn": ALICE, "points": 1, "idempotency_key": "chk-2"})
            assert again.status_code == 401  # the old key no longer works
    finally:
        web.state.context.close()


def test_a_store_id_is_checked(sqlite_url):
    assert accrual(sqlite_url, "stores", "add", "bad id; drop").exit_code == 2


def test_the_sms_outbox_shows_the_latest_messages_as_json(sqlite_url, clock):
    web = create_app(settings_for(sqlite_url), clock=clock)
    try:
        with TestClient(web, base_url="https://testserver") as client:
            client.post("/api/v1/auth/otp/request", json={"msisdn": ALICE, "purpose": "login"})
            client.post("/api/v1/auth/otp/request", json={"msisdn": "79160000009", "purpose": "password"})
    finally:
        web.state.context.close()
    everything = json.loads(accrual(sqlite_url, "sms", "outbox", "--json").stdout)
    assert [m["msisdn"] for m in everything] == ["79160000009", ALICE]
    mine = json.loads(accrual(sqlite_url, "sms", "outbox", "--json", "--msisdn", ALICE).stdout)
    assert len(mine) == 1 and "код для входа" in mine[0]["text"]


def test_the_http_gateway_posts_to_the_provider_with_its_token():
    seen = []

    def provider(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers["authorization"], json.loads(request.content)))
        return httpx.Response(202 if len(seen) == 1 else 503)

    gateway = HttpGateway("https://sms.example/send", "t0ken", transport=httpx.MockTransport(provider))
    gateway.send(ALICE, "hello", None)
    assert seen == [("https://sms.example/send", "Bearer t0ken", {"to": f"+{ALICE}", "text": "hello"})]
    with pytest.raises(SmsError):
        gateway.send(ALICE, "again", None)


def test_web_settings_are_read_and_checked():
    web = Settings.from_env({"ACCRUAL_TRUSTED_PROXIES": "10.0.0.0/8,192.168.1.7", "ACCRUAL_TERMS_VERSION": "v2",
                             "ACCRUAL_INSECURE_COOKIES": "1"}).web
    assert [str(n) for n in web.trusted_proxies] == ["10.0.0.0/8", "192.168.1.7/32"]
    assert web.terms_version == "v2" and web.insecure_cookies
    assert Settings.from_env({}).web.trusted_proxies == ()
    for bad in ({"ACCRUAL_TRUSTED_PROXIES": "everyone"}, {"ACCRUAL_SMS_GATEWAY_URL": "ftp://x"},
                {"ACCRUAL_INSECURE_COOKIES": "yes"}):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)


def test_catalogue_and_offers_files_are_configurable(sqlite_url, clock, tmp_path):
    catalog = tmp_path / "catalog.toml"
    catalog.write_text('[[rewards]]\nid = "only"\ncategory = "games"\ntitle = "Игра"\npoints = 5\n')
    offers = tmp_path / "offers.toml"
    offers.write_text('[[offers]]\nid = "o"\ntitle = "Т"\nvalid_from = 2026-11-01\nvalid_to = 2026-11-30\n')
    web = create_app(settings_for(sqlite_url, ACCRUAL_CATALOG_FILE=str(catalog), ACCRUAL_OFFERS_FILE=str(offers)),
                     clock=clock)
    try:
        with TestClient(web) as client:
            assert [r["item_id"] for r in client.get("/api/v1/catalog").json()["rewards"]] == ["only"]
            assert [o["offer_id"] for o in client.get("/api/v1/offers").json()] == ["o"]
    finally:
        web.state.context.close()


def test_serve_refuses_a_broken_catalogue_file(sqlite_url, tmp_path):
    broken = tmp_path / "catalog.toml"
    broken.write_text('[[rewards]]\nid = "x"\ncategory = "cars"\ntitle = "Машина"\npoints = 5\n')
    result = accrual(sqlite_url, "serve", ACCRUAL_CATALOG_FILE=str(broken))
    assert result.exit_code == 2 and "unknown category 'cars'" in result.stderr


def test_serve_with_two_workers_shares_the_store_and_its_limits(tmp_path):
    """`accrual serve --workers 2`: two server processes on one port and one
    store. Orders of two members placed at once through both are each taken
    once, and the SMS limit of a number holds across the processes."""
    import concurrent.futures
    import os
    import re
    from pathlib import Path

    from tests.programme import TOPICS
    from tests.web.conftest import serving

    url = f"sqlite:///{tmp_path / 'accrual.sqlite3'}"
    env = {**os.environ, "ACCRUAL_DATABASE_URL": url}
    members = ["79160000101", "79160000102"]
    feed = tmp_path / "feed.jsonl"
    feed.write_text("".join(json.dumps(m) + "\n" for i, msisdn in enumerate(members) for m in (
        {"topic": TOPICS["member_enrolled"], "event_id": f"e-{i}", "type": "member_enrolled",
         "occurred_at": "2026-10-01T10:00:00+03:00", "msisdn": msisdn, "channel": "shop"},
        {"topic": TOPICS["ballyplus_transfer"], "event_id": f"b-{i}", "type": "ballyplus_transfer",
         "occurred_at": "2026-10-05T10:00:00+03:00", "msisdn": msisdn, "partner_points": 1000})))
    assert accrual(url, "ingest", str(feed)).exit_code == 0
    with serving(env, "--workers", "2") as (base, server):
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        assert len(children) >= 2  # the worker processes (uvicorn may add a helper)
        tokens = []
        for msisdn in members:
            assert httpx.post(f"{base}/api/v1/auth/otp/request", json={"msisdn": msisdn, "purpose": "login"}).status_code == 202
            outbox = json.loads(accrual(url, "sms", "outbox", "--json", "--msisdn", msisdn).stdout)
            code = re.search(r"\b(\d{6})\b", outbox[0]["text"]).group(1)
            answer = httpx.post(f"{base}/api/v1/auth/otp/verify", json={"msisdn": msisdn, "code": code, "accept_terms": True})
            tokens.append(answer.json()["token"])

        def order(n: int) -> int:
            # a new connection each time, so that both processes take some
            return httpx.post(f"{base}/api/v1/orders", headers={"Authorization": f"Bearer {tokens[n % 2]}"},
                              json={"item_id": "gudok-month", "idempotency_key": f"k{n}"}, timeout=30).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(order, range(16)))
        assert statuses == [201] * 16
        # each member ordered 8 gifts of 100 points: 1,000 - 800 = 200
        for token in tokens:
            assert httpx.get(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()["balance"] == 200
        # the SMS limit of a number (3 in 10 minutes) counts across both processes: the sign-in used one
        sent = [httpx.post(f"{base}/api/v1/auth/otp/request", json={"msisdn": members[0], "purpose": "login"}).status_code
                for _ in range(4)]
        assert sent == [202, 202, 429, 429]
