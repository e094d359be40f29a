"""The values the configuration is made of: a frozen dataclass per TOML section and per account,
``Config`` holding them all, and the ``Secret`` a token is kept in, which never prints itself.

Also what every layer that reads raw values shares: the field types of a section, and the coercion
of a TOML value or an environment string into one of them (or a ``ConfigError`` naming the key).
Nothing here reads a file or the environment, so ``config``, ``env`` and ``accounts``
can all import it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from harvester.errors import ConfigError

DEFAULT_BASE_URL = "https://spideriq.di-atomic.com"


class Secret:
    """A string that shows as ``***`` in reprs, logs and tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    dsn: str = "postgresql://localhost/harvester"
    # Migrations (a session advisory lock) and LISTEN need a session of their own, which a pooler
    # in transaction mode does not give; "" means the same as ``dsn``.
    direct_dsn: str = ""
    # `status`, `show`, `export` (and the console) only read: a hot standby serves them; "" = dsn.
    read_dsn: str = ""
    pool_min: int = 1
    pool_max: int = 10
    connect_timeout_s: float = 10.0
    statement_timeout_s: float = 30.0
    startup_wait_s: float = 10.0
    # A peer that vanished without a reset: TCP keepalive probes start after this much silence on
    # a connection (then every half of it, three of them), and data left unacknowledged this long
    # three times over ends the connection.
    keepalive_s: float = 10.0
    # The LISTEN connection only receives: it is asked to answer within this long, this often.
    listen_check_s: float = 15.0
    # `harvester run` applies pending migrations instead of refusing to start (also `run --migrate`)
    migrate_on_start: bool = False


@dataclass(frozen=True, slots=True)
class ApiConfig:
    base_url: str = DEFAULT_BASE_URL
    token: Secret = field(default_factory=lambda: Secret(""))
    token_file: str = ""
    allow_insecure: bool = False
    verify_tls: bool = True
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 60.0
    user_agent: str = "harvester/0.1"


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    requests_per_minute: float = 100.0
    burst: int = 20
    max_in_flight: int = 8
    reserve_per_minute: float = 0.0
    default_pause_s: float = 60.0
    # Derived, not a key: the rolling window the per-minute cap applies to (60 s / speed).
    window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class PollingConfig:
    discovery: str = "list"
    events: str = "sse"
    first_poll_site_s: float = 20.0
    first_poll_maps_s: float = 60.0
    first_poll_other_s: float = 30.0
    min_interval_s: float = 3.0
    max_interval_s: float = 300.0
    backoff_factor: float = 1.5
    jitter: float = 0.2
    not_found_retries: int = 5
    not_found_grace_s: float = 300.0
    give_up_after_s: float = 7 * 24 * 3600.0
    fault_backoff_base_s: float = 2.0
    fault_backoff_max_s: float = 300.0
    breaker_threshold: int = 10
    breaker_pause_s: float = 30.0
    auth_recheck_s: float = 300.0
    list_interval_s: float = 6.0
    list_max_staleness_s: float = 30.0
    list_overlap_s: float = 5.0
    list_max_pages: int = 10
    list_fallback_s: float = 120.0
    list_poll_factor: float = 3.0
    list_reconcile_s: float = 300.0
    # Derived, not keys: how often discovery looks whether a pass is due, and the list overlap in
    # the API's own (unscaled) seconds, which its timestamps are compared in.
    list_tick_s: float = 0.5
    list_overlap_api_s: float = 5.0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    worker_id: str = ""
    lease_s: float = 30.0
    heartbeat_s: float = 10.0
    idle_poll_s: float = 5.0
    shutdown_grace_s: float = 20.0
    # Derived, not a key: how often expired jobs are swept (a minute, at most a tenth of give-up).
    housekeeping_s: float = 60.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    enabled: bool = True
    listen: str = "127.0.0.1:9187"


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: str = "json"
    level: str = "info"


DEFAULT_ACCOUNT = "default"
ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # also the CHECK on harvester.jobs.account


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """One SpiderIQ client: its token and its share of the API (effective, speed-scaled values)."""

    name: str = DEFAULT_ACCOUNT
    token: Secret = field(default_factory=lambda: Secret(""))
    token_file: str = ""
    requests_per_minute: float = 100.0
    burst: int = 20
    reserve_per_minute: float = 0.0
    adopt: bool = False
    adopt_since: str = ""  # as written: a date, a timestamp or a duration back from start-up
    # Derived, not a key: adopt_since as a point in time (None: no backfill, live jobs only).
    adopt_since_at: datetime | None = None


ACCOUNT_KEYS: dict[str, Any] = {
    "name": str,
    "token": Secret,
    "token_file": str,
    "requests_per_minute": float,
    "burst": int,
    "reserve_per_minute": float,
    "adopt": bool,
    "adopt_since": str,
}
ACCOUNT_RATE_KEYS = ("requests_per_minute", "burst", "reserve_per_minute")


@dataclass(frozen=True, slots=True)
class NormalizeConfig:
    # Region (ISO 3166 code such as "US") for phone numbers written without "+"; "" = only
    # numbers with "+" get an E.164 form.
    default_region: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    polling: PollingConfig = field(default_factory=PollingConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    speed: float = 1.0
    accounts: tuple[AccountConfig, ...] = (AccountConfig(),)

    def account(self, name: str) -> AccountConfig | None:
        return next((a for a in self.accounts if a.name == name), None)

    @property
    def account_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.accounts)

    def local_s(self, api_seconds: float) -> float:
        """A duration the API reports (in its own time) in this process's scaled seconds."""
        return api_seconds / self.speed


SECTIONS: dict[str, type[Any]] = {
    "database": DatabaseConfig,
    "api": ApiConfig,
    "rate_limit": RateLimitConfig,
    "polling": PollingConfig,
    "worker": WorkerConfig,
    "server": ServerConfig,
    "log": LogConfig,
    "normalize": NormalizeConfig,
}
DERIVED = {
    "rate_limit.window_s",
    "polling.list_tick_s",
    "polling.list_overlap_api_s",
    "worker.housekeeping_s",
}


def unknown_key(dotted: str, known: typing.Iterable[str]) -> ConfigError:
    """``unknown config key: polling.list_reconcile: did you mean polling.list_reconcile_s?``"""
    close = difflib.get_close_matches(dotted, list(known), n=1)
    return ConfigError(f"unknown config key: {dotted}" + (f": did you mean {close[0]}?" if close else ""))


def field_types(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(key: str, kind: Any, value: Any, from_text: bool) -> Any:
    """Turn a TOML value (or an environment string) into the field's type, or say why not."""
    if kind is Secret:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string")
        return Secret(value.strip())
    if kind is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.lower() in {"1", "true", "yes", "on"}:
            return True
        if from_text and isinstance(value, str) and value.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if from_text and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            number = float(value)
        elif from_text and isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        else:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type")  # pragma: no cover - guarded by the dataclasses
