"""Configuration: environment variables, each with one documented default
that runs the embedded mode (an SQLite file, no servers)."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote, urlsplit


class SettingsError(ValueError):
    """A setting has a value the engine cannot use; the message says which."""


@dataclass(frozen=True)
class DatabaseUrl:
    scheme: str  # "sqlite" or "postgresql"
    path: Path | None = None
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""

    @property
    def is_postgres(self) -> bool:
        return self.scheme == "postgresql"

    def redacted(self) -> str:
        if self.is_postgres:
            return f"postgresql://{self.user}:***@{self.host}:{self.port}/{self.dbname}"
        return f"sqlite:///{self.path}"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(os.environ.get("ACCRUAL_DATA_DIR") or Path(base) / "accrual")


def parse_database_url(url: str) -> DatabaseUrl:
    """`sqlite:////absolute/path.sqlite3` or `postgresql://user:pass@host:port/db`."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        if not parts.path.startswith("//"):
            raise SettingsError(
                f"ACCRUAL_DATABASE_URL {url!r}: an SQLite URL names an absolute path, "
                "as in sqlite:////var/lib/accrual/accrual.sqlite3"
            )
        return DatabaseUrl("sqlite", path=Path(parts.path[1:]))
    if parts.scheme in ("postgresql", "postgres"):
        dbname = parts.path.lstrip("/")
        if not parts.hostname or not dbname:
            raise SettingsError(f"ACCRUAL_DATABASE_URL {url!r}: expected postgresql://user:pass@host:port/db")
        return DatabaseUrl(
            "postgresql",
            host=parts.hostname,
            port=parts.port or 5432,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            dbname=dbname,
        )
    raise SettingsError(f"ACCRUAL_DATABASE_URL {url!r}: the scheme must be sqlite or postgresql")


@dataclass(frozen=True)
class WebSettings:
    """The personal account (`accrual serve`); docs/personal-account.md, docs/security.md."""

    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # empty: X-MSISDN is off
    sms_gateway_url: str = ""  # empty: SMS go to the database outbox
    sms_gateway_token: str = ""
    terms_version: str = "2026-01"
    insecure_cookies: bool = False  # only for plain-http development
    catalog_file: Path | None = None  # None: the shipped web/data/catalog.toml
    offers_file: Path | None = None
    adjustment_approval_above: int = 1000  # points; a larger adjustment waits for a second supervisor


@dataclass(frozen=True)
class Settings:
    database: DatabaseUrl
    rules_file: Path | None
    batch_size: int
    cache_size: int
    web: WebSettings = field(default_factory=WebSettings)
    store_outage_limit_s: int = 900  # a worker rides out a store outage this long, then exits (accrual/outage.py)
    point_value_rub: Decimal = Decimal("1.00")  # the books in rubles (a shop discount is 1 point = 1 ruble)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        url = env.get("ACCRUAL_DATABASE_URL", "").strip()
        if not url:
            url = f"sqlite:///{(default_data_dir() / 'accrual.sqlite3').resolve()}"
        rules = env.get("ACCRUAL_RULES_FILE", "").strip()
        return cls(
            database=parse_database_url(url),
            rules_file=Path(rules) if rules else None,
            batch_size=_positive_int(env, "ACCRUAL_BATCH_SIZE", 2000),
            cache_size=_positive_int(env, "ACCRUAL_CACHE_SIZE", 20000),
            web=_web_settings(env),
            store_outage_limit_s=_positive_int(env, "ACCRUAL_STORE_OUTAGE_LIMIT", 900),
            point_value_rub=_point_value(env),
        )


def _web_settings(env) -> WebSettings:
    proxies = []
    for item in env.get("ACCRUAL_TRUSTED_PROXIES", "").split(","):
        if item.strip():
            try:
                proxies.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as error:
                raise SettingsError(f"ACCRUAL_TRUSTED_PROXIES: {item.strip()!r} is not a network ({error})") from error
    url = env.get("ACCRUAL_SMS_GATEWAY_URL", "").strip()
    if url and not url.startswith(("https://", "http://")):
        raise SettingsError(f"ACCRUAL_SMS_GATEWAY_URL {url!r}: expected an http(s) URL")
    insecure = env.get("ACCRUAL_INSECURE_COOKIES", "").strip()
    if insecure not in ("", "0", "1"):
        raise SettingsError(f"ACCRUAL_INSECURE_COOKIES={insecure!r}: expected 0 or 1")
    catalog = env.get("ACCRUAL_CATALOG_FILE", "").strip()
    offers = env.get("ACCRUAL_OFFERS_FILE", "").strip()
    return WebSettings(
        trusted_proxies=tuple(proxies),
        sms_gateway_url=url,
        sms_gateway_token=env.get("ACCRUAL_SMS_GATEWAY_TOKEN", "").strip(),
        terms_version=env.get("ACCRUAL_TERMS_VERSION", "").strip() or WebSettings.terms_version,
        insecure_cookies=insecure == "1",
        catalog_file=Path(catalog) if catalog else None,
        offers_file=Path(offers) if offers else None,
        adjustment_approval_above=_non_negative_int(env, "ACCRUAL_ADJUSTMENT_APPROVAL_ABOVE", 1000),
    )


def _non_negative_int(env, name: str, default: int) -> int:
    """A whole number of ASCII digits, 0 to 10,000,000."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 8) or int(raw) > 10_000_000:
        raise SettingsError(f"{name}={raw!r}: expected a whole number from 0 to 10000000")
    return int(raw)


def _point_value(env) -> Decimal:
    """ACCRUAL_POINT_VALUE_RUB: rubles with at most four decimals (ASCII), above 0, at most 1000."""
    raw = env.get("ACCRUAL_POINT_VALUE_RUB", "").strip()
    if not raw:
        return Decimal("1.00")
    whole, _, fraction = raw.partition(".")
    if not (raw.isascii() and whole.isdigit() and (fraction.isdigit() or (not fraction and "." not in raw))
            and len(whole) <= 4 and len(fraction) <= 4) or not 0 < Decimal(raw) <= 1000:
        raise SettingsError(f"ACCRUAL_POINT_VALUE_RUB={raw!r}: expected rubles a point, like 1.00 (above 0, at most 1000)")
    return Decimal(raw)


def _positive_int(env, name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) <= 0:
        raise SettingsError(f"{name}={raw!r}: expected a positive whole number")
    return int(raw)


@dataclass(frozen=True)
class WorkerSettings:
    """The stream worker's settings (all optional but the broker address)."""

    bootstrap: str
    topic_prefix: str
    metrics_port: int | None  # None: no metrics endpoint
    metrics_host: str
    auto_tick: bool
    tick_after_minutes: int  # minutes after 00:00 Moscow time the daily tick runs
    replication_factor: int
    batch_size: int  # records per poll, applied in one transaction

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerSettings:
        env = os.environ if environ is None else environ
        metrics = env.get("ACCRUAL_METRICS_PORT", "9464").strip()
        if metrics and metrics != "0" and not metrics.isdigit():
            raise SettingsError(f"ACCRUAL_METRICS_PORT={metrics!r}: expected a port number, or 0 for none")
        tick = env.get("ACCRUAL_AUTO_TICK", "on").strip().lower()
        if tick not in ("on", "off"):
            raise SettingsError(f"ACCRUAL_AUTO_TICK={tick!r}: expected on or off")
        after = env.get("ACCRUAL_TICK_AFTER", "5").strip()
        if not after.isdigit() or int(after) >= 24 * 60:
            raise SettingsError(f"ACCRUAL_TICK_AFTER={after!r}: expected minutes after midnight (0-1439)")
        return cls(
            bootstrap=env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() or "127.0.0.1:9092",
            topic_prefix=env.get("ACCRUAL_TOPIC_PREFIX", "").strip(),
            metrics_port=int(metrics) if metrics and metrics != "0" else None,
            metrics_host=env.get("ACCRUAL_METRICS_HOST", "127.0.0.1").strip() or "127.0.0.1",
            auto_tick=tick == "on",
            tick_after_minutes=int(after),
            replication_factor=_positive_int(env, "KAFKA_REPLICATION_FACTOR", 1),
            batch_size=_positive_int(env, "ACCRUAL_WORKER_BATCH_SIZE", 2000),
        )
