"""Configuration: environment variables, each with one documented default
that runs the embedded mode (an SQLite file, no servers)."""
from __future__ import annotations

import os
from dataclasses import dataclass
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
class Settings:
    database: DatabaseUrl
    rules_file: Path | None
    batch_size: int
    cache_size: int

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
            batch_size=_positive_int(env, "ACCRUAL_BATCH_SIZE", 500),
            cache_size=_positive_int(env, "ACCRUAL_CACHE_SIZE", 20000),
        )


def _positive_int(env, name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) <= 0:
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
        )
