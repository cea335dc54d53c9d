"""Rate limits of the personal account: sliding windows of stored hits,
taken all at once or not at all, and the client address they are keyed by.

A request that costs something (an SMS, an argon2 check, a transfer offer)
takes one hit in each of its buckets: the number and purpose, the client
address, the whole service. Either every bucket has room and all of them
count the hit, or none does and the request is refused: a refused request
never uses up a member's own allowance. Refusals are counted apart, per
address, so that an address that keeps being refused is refused sooner.

The check and the hit are one transaction. On SQLite that transaction holds
the database's write lock (`BEGIN IMMEDIATE`); on PostgreSQL each bucket is
locked with a transaction-level advisory lock, in a fixed order, so that two
web processes cannot both see room for the last hit.
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import timedelta

from web.clock import Clock
from web.store import WebStore, parse_stamp, stamp

IPV6_PREFIX = 64  # one subscriber's IPv6 network: a client changes its address within a /64 at will


@dataclass(frozen=True)
class Limit:
    """At most `hits` in any `window`."""

    hits: int
    window: timedelta


@dataclass(frozen=True)
class Bucket:
    key: str
    limit: Limit


class TooManyRequests(Exception):
    def __init__(self, retry_after_s: int):
        super().__init__(f"retry after {retry_after_s} s")
        self.retry_after_s = max(1, retry_after_s)


REFUSALS_PER_ADDRESS = Limit(60, timedelta(minutes=10))  # then the address is refused outright


class Limits:
    def __init__(self, store: WebStore, clock: Clock):
        self.store = store
        self.clock = clock

    def take(self, *buckets: Bucket, client: str | None = None) -> None:
        """Counts one hit in every bucket, or raises TooManyRequests (with the
        longest wait of the full ones) and counts a refusal of `client`."""
        now = self.clock.now()
        refused = Bucket(f"refused:{client}", REFUSALS_PER_ADDRESS) if client else None
        with self.store.transaction() as tx:
            keys = sorted({b.key for b in buckets} | ({refused.key} if refused else set()))
            if self.store.db.is_postgres:
                for key in keys:
                    tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (key,))
            refused_wait = 0 if refused is None else self._wait(tx, refused, now)
            longest = max([self._wait(tx, bucket, now) for bucket in buckets] + [refused_wait])
            if longest == 0:
                hits = buckets
            else:  # a refusal counts, unless its own window is full (a flood adds no rows beyond the limit)
                hits = (refused,) if refused is not None and refused_wait == 0 else ()
            for bucket in hits:
                tx.execute("INSERT INTO web_rate_hits (bucket, at) VALUES (?, ?)", (bucket.key, stamp(now)))
        if longest > 0:
            raise TooManyRequests(longest)

    @staticmethod
    def _wait(tx, bucket: Bucket, now) -> int:
        """Seconds until `bucket` has room for one more hit (0: it has room)."""
        window_start = stamp(now - bucket.limit.window)
        tx.execute("DELETE FROM web_rate_hits WHERE bucket = ? AND at <= ?", (bucket.key, window_start))
        rows = tx.query(
            "SELECT at FROM web_rate_hits WHERE bucket = ? ORDER BY at DESC LIMIT 1 OFFSET ?",
            (bucket.key, bucket.limit.hits - 1),
        )
        if not rows:
            return 0
        # The window is full until its `hits`-th newest hit leaves it.
        frees_at = parse_stamp(rows[0][0]) + bucket.limit.window
        return max(1, math.ceil((frees_at - now).total_seconds()))


def client_key(address: str) -> str:
    """The key a client address is limited by: an IPv4 address as it is, an
    IPv6 address by its /64 network, anything unparseable as itself (cut)."""
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()[:64] or "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))
    return str(parsed)
