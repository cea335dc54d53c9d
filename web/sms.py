"""How SMS leave the personal account: a gateway with one method.

`DatabaseOutbox` (the default) writes each message to `web_sms_outbox`, where
`accrual sms outbox --json` reads it: for development and tests, never for
real subscribers (the outbox holds the codes in clear). `HttpGateway` posts
to a provider's HTTP endpoint (`ACCRUAL_SMS_GATEWAY_URL`, with
`ACCRUAL_SMS_GATEWAY_TOKEN` as a bearer token)."""
from __future__ import annotations

import logging
import secrets
from datetime import datetime
from typing import Protocol

import httpx

from web.store import WebStore, stamp

logger = logging.getLogger(__name__)
SEND_TIMEOUT_S = 5.0


class SmsError(RuntimeError):
    """The gateway did not take the message."""


class SmsGateway(Protocol):
    def send(self, msisdn: str, text: str, at: datetime, idempotency_key: str | None = None) -> None:
        """Sends `text`; a second send with the same `idempotency_key` sends
        nothing (the notifier's deterministic keys; one-time codes have none)."""


class DatabaseOutbox:
    def __init__(self, store: WebStore):
        self.store = store

    def send(self, msisdn: str, text: str, at: datetime, idempotency_key: str | None = None) -> None:
        """A keyed message already in the outbox is not written again: the
        UNIQUE index decides, so also between processes sending at once
        (PostgreSQL makes the second insert wait for the first's commit)."""
        with self.store.transaction() as tx:
            seq = tx.query("SELECT COALESCE(MAX(seq), 0) + 1 FROM web_sms_outbox")[0][0]
            tx.execute(
                "INSERT INTO web_sms_outbox (sms_id, seq, msisdn, text, created_at, idempotency_key) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
                (secrets.token_hex(8), seq, msisdn, text, stamp(at), idempotency_key),
            )

    def messages(self, msisdn: str | None = None, limit: int = 100) -> list[dict]:
        """The latest messages first."""
        where, params = ("WHERE msisdn = ? ", (msisdn,)) if msisdn else ("", ())
        rows = self.store.query(
            f"SELECT msisdn, text, created_at, idempotency_key FROM web_sms_outbox {where}ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        )
        return [{"msisdn": m, "text": t, "sent_at": at, "key": k} for m, t, at, k in rows]


class HttpGateway:
    """POST {"to": "+7…", "text": "…"} with `Authorization: Bearer <token>`,
    and an `Idempotency-Key` header when the message has a key (for the
    provider to drop a repeat); any 2xx is taken as accepted."""

    def __init__(self, url: str, token: str, transport: httpx.BaseTransport | None = None):
        self.url = url
        self.client = httpx.Client(
            timeout=SEND_TIMEOUT_S, transport=transport,
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )

    def send(self, msisdn: str, text: str, at: datetime, idempotency_key: str | None = None) -> None:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        try:
            response = self.client.post(self.url, json={"to": f"+{msisdn}", "text": text}, headers=headers)
        except httpx.HTTPError as error:
            raise SmsError(f"SMS gateway unreachable: {type(error).__name__}") from error
        if not response.is_success:
            raise SmsError(f"SMS gateway answered {response.status_code}")
