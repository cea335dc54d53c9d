"""Which SMS a member wants: three switches in Settings (credits, transfers,
expiry reminders; all on by default), kept in the web store and published
to the compacted topic `loyalty.member-preferences.v1` (key msisdn) for the
notifier (docs/notifications.md).

The web request only writes the row, with a new version, in its own
transaction; `PreferencesPublisher` (a thread of the web process, when
the engine runs with Kafka) sends every row whose version is not yet on
the topic, then marks it sent. A crash between the send and the mark sends
the same version again: harmless on a compacted topic keyed by msisdn,
whose value carries the version. Several web processes may each send a
row; the mark only moves forward."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from web.store import WebStore, stamp

logger = logging.getLogger("accrual.web")

GROUPS = ("credits", "transfers", "expiry")  # notifier.preferences: the same three switches
PUBLISH_BATCH = 500
PUBLISH_IDLE_S = 1.0


@dataclass(frozen=True)
class NotificationPreferences:
    msisdn: str
    off: frozenset[str]
    version: int  # 0: never changed (everything on)

    def to_json(self) -> dict[str, Any]:
        return {group: group not in self.off for group in GROUPS} | {"version": self.version}


def preferences_of(store: WebStore, msisdn: str) -> NotificationPreferences:
    rows = store.query("SELECT off, version FROM web_notification_preferences WHERE msisdn = ?", (msisdn,))
    if not rows:
        return NotificationPreferences(msisdn, frozenset(), 0)
    return NotificationPreferences(msisdn, _groups(rows[0][0]), int(rows[0][1]))


def choose(store: WebStore, msisdn: str, off: set[str], at: datetime) -> NotificationPreferences:
    """The member's new choice, as the next version (the same choice again
    changes nothing)."""
    assert off <= set(GROUPS), f"unknown groups: {sorted(off - set(GROUPS))}"
    text = ",".join(sorted(off))
    with store.transaction() as tx:
        rows = tx.query("SELECT off, version FROM web_notification_preferences WHERE msisdn = ?", (msisdn,))
        if rows and rows[0][0] == text:
            return NotificationPreferences(msisdn, frozenset(off), int(rows[0][1]))
        version = int(rows[0][1]) + 1 if rows else 1
        tx.execute(
            "INSERT INTO web_notification_preferences (msisdn, off, version, updated_at, published_version) "
            "VALUES (?, ?, ?, ?, 0) ON CONFLICT (msisdn) DO UPDATE SET off = ?, version = ?, updated_at = ?",
            (msisdn, text, version, stamp(at), text, version, stamp(at)),
        )
    return NotificationPreferences(msisdn, frozenset(off), version)


def _groups(text: str) -> frozenset[str]:
    return frozenset(g for g in text.split(",") if g in GROUPS)


def record(msisdn: str, off: str, version: int, updated_at: str) -> bytes:
    """The topic's value: what `notifier.preferences.Preferences.from_record` reads."""
    return json.dumps({"msisdn": msisdn, "off": sorted(_groups(off)), "version": version,
                       "updated_at": updated_at}).encode()


class PreferencesPublisher:
    """Sends the rows not yet on the topic. `publish_once` is one pass (the
    tests call it); `start` runs passes in a thread until `close`."""

    def __init__(self, store: WebStore, bootstrap: str, topic: str):
        self.store = store
        self.bootstrap = bootstrap
        self.topic = topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="accrual-web-preferences", daemon=True)

    def start(self) -> PreferencesPublisher:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
        started = False
        while not self._stop.is_set():
            try:
                if not started:
                    await producer.start()
                    started = True
                await self._publish(producer)
            except Exception:  # Kafka or the store away: the rows wait, marked unsent
                logger.warning("member preferences not published yet; retrying", exc_info=True)
            await asyncio.sleep(PUBLISH_IDLE_S)
        if started:
            await producer.stop()

    async def publish_once(self) -> int:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            return await self._publish(producer)
        finally:
            await producer.stop()

    async def _publish(self, producer: Any) -> int:
        rows = self.store.query(
            "SELECT msisdn, off, version, updated_at FROM web_notification_preferences "
            "WHERE published_version < version ORDER BY updated_at LIMIT ?", (PUBLISH_BATCH,),
        )
        sent = [await producer.send(self.topic, key=msisdn.encode(), value=record(msisdn, off, int(version), at))
                for msisdn, off, version, at in rows]
        await asyncio.gather(*sent)  # every record acknowledged (acks=all) before any row is marked
        with self.store.transaction() as tx:
            for msisdn, _, version, _ in rows:
                tx.execute("UPDATE web_notification_preferences SET published_version = ? "
                           "WHERE msisdn = ? AND published_version < ?", (version, msisdn, version))
        return len(rows)
