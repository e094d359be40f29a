"""Configuration: a TOML file, then environment variables, then flags; later wins.

Everything is validated here, at start-up, into frozen dataclasses; a bad or unknown key is a
``ConfigError`` whose message names the key, and so is a ``HARVESTER_*`` environment variable that
names no key (with the nearest real name), unless ``HARVESTER_IGNORE_ENV`` lists it. Durations
(keys ending in ``_s``) are divided by ``speed`` and ``requests_per_minute`` is multiplied by it, so
the rest of the program only ever sees effective values. The API token is held in a ``Secret``
that never prints itself.

Accounts: each ``[[accounts]]`` table (or ``HARVESTER_ACCOUNTS__<NAME>__<KEY>`` in the environment)
is one SpiderIQ client with its own token and budget; the single-credential keys (``api.token``,
``api.token_file`` and ``[rate_limit]``) are the account ``default``. Per-account rate keys default
to ``[rate_limit]``'s.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import socket
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harvester import phones
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
    pool_min: int = 1
    pool_max: int = 10
    connect_timeout_s: float = 10.0
    statement_timeout_s: float = 30.0
    startup_wait_s: float = 10.0
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

# The documented environment names; any other HARVESTER_SECTION__KEY also works.
ENV_NAMES = {
    "HARVESTER_DSN": "database.dsn",
    "HARVESTER_DIRECT_DSN": "database.direct_dsn",
    "HARVESTER_API_TOKEN": "api.token",
    "HARVESTER_API_TOKEN_FILE": "api.token_file",
    "HARVESTER_API_BASE_URL": "api.base_url",
    "HARVESTER_LOG_FORMAT": "log.format",
    "HARVESTER_LOG_LEVEL": "log.level",
    "HARVESTER_SPEED": "speed",
}
NOT_CONFIG_ENV = {"HARVESTER_CONFIG", "HARVESTER_TEST_DSN", "HARVESTER_IGNORE_ENV"}
# Test harnesses own this prefix (HARVESTER_TEST_DSN and its kin); no key can start with it.
NOT_CONFIG_PREFIXES = ("HARVESTER_TEST_",)
IGNORE_ENV = "HARVESTER_IGNORE_ENV"
ACCOUNT_ENV_PREFIX = "HARVESTER_ACCOUNTS__"

CHOICES = {
    "polling.discovery": {"list", "poll"},
    "polling.events": {"sse", "off"},
    "log.format": {"json", "console"},
    "log.level": {"debug", "info", "warning", "error"},
}


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key: str, kind: Any, value: Any, from_text: bool) -> Any:
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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"config file unreadable: {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _flatten(doc: Mapping[str, Any]) -> dict[str, Any]:
    """TOML document → {"section.key": value}, refusing unknown sections and keys."""
    flat: dict[str, Any] = {}
    for name, value in doc.items():
        if name == "speed":
            flat["speed"] = value
            continue
        if name == "accounts":
            flat["accounts"] = _account_tables(value)
            continue
        if name not in SECTIONS:
            raise ConfigError(f"unknown config key: {name}")
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a table")
        known = _field_types(SECTIONS[name])
        for key, item in value.items():
            dotted = f"{name}.{key}"
            if key not in known or dotted in DERIVED:
                raise ConfigError(f"unknown config key: {dotted}")
            flat[dotted] = item
    return flat


def _account_tables(value: Any) -> list[dict[str, Any]]:
    """``[[accounts]]``: a list of tables with known keys and a ``name`` each."""
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise ConfigError("accounts: expected [[accounts]] tables")
    tables: list[dict[str, Any]] = []
    for n, table in enumerate(value):
        for key in table:
            if key not in ACCOUNT_KEYS:
                raise ConfigError(f"unknown config key: accounts[{n}].{key}")
        if "name" not in table:
            raise ConfigError(f"accounts[{n}].name: required")
        tables.append(dict(table))
    return tables


def env_account_name(name: str) -> str:
    """The NAME part of HARVESTER_ACCOUNTS__<NAME>__<KEY> for an account name."""
    return name.upper().replace("-", "_")


def env_names() -> list[str]:
    """Every environment name that sets a key: the short ones and each HARVESTER_SECTION__KEY."""
    names = set(ENV_NAMES)
    for section, cls in SECTIONS.items():
        for key in _field_types(cls):
            if f"{section}.{key}" not in DERIVED:
                names.add(f"HARVESTER_{section.upper()}__{key.upper()}")
    return sorted(names)


def _ignored(environ: Mapping[str, str]) -> tuple[set[str], tuple[str, ...]]:
    """HARVESTER_IGNORE_ENV: names (or ``PREFIX*`` patterns) of foreign HARVESTER_* variables."""
    names: set[str] = set()
    prefixes: list[str] = list(NOT_CONFIG_PREFIXES)
    for item in environ.get(IGNORE_ENV, "").replace(",", " ").split():
        if item.endswith("*"):
            prefixes.append(item[:-1])
        else:
            names.add(item)
    return names, tuple(prefixes)


def _unknown_env(name: str, dotted: str | None = None) -> ConfigError:
    """One line naming the variable, the nearest real name and how to keep a foreign one."""
    what = (
        f"unknown config key: {dotted} (from environment {name})"
        if dotted
        else f"unknown environment variable {name}"
    )
    # Compared without the shared prefix, which would make every name look close to every other.
    tails = {known.removeprefix("HARVESTER_"): known for known in env_names()}
    close = difflib.get_close_matches(name.upper().removeprefix("HARVESTER_"), tails, n=1)
    hint = f"did you mean {tails[close[0]]}?" if close else "no such setting"
    return ConfigError(f"{what}: {hint} (if it is not meant for harvester, list it in {IGNORE_ENV})")


def _from_env(environ: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    ignored, prefixes = _ignored(environ)
    for name, value in environ.items():
        if not name.startswith("HARVESTER_") or name in NOT_CONFIG_ENV:
            continue
        if name in ENV_NAMES:
            found[ENV_NAMES[name]] = value
            continue
        if name.startswith(ACCOUNT_ENV_PREFIX) and name not in ignored:
            account, sep, key = name[len(ACCOUNT_ENV_PREFIX) :].partition("__")
            if not sep or not account or key.lower() not in ACCOUNT_KEYS or key.lower() == "name":
                raise ConfigError(
                    f"unknown environment variable {name}: expected "
                    f"{ACCOUNT_ENV_PREFIX}<NAME>__<KEY> with KEY one of "
                    + ", ".join(k.upper() for k in ACCOUNT_KEYS if k != "name")
                )
            found[f"accounts.{account}.{key.lower()}"] = value
            continue
        section, sep, key = name[len("HARVESTER_") :].lower().partition("__")
        dotted = f"{section}.{key}"
        if sep and section in SECTIONS and key in _field_types(SECTIONS[section]) and dotted not in DERIVED:
            found[dotted] = value
        elif name not in ignored and not name.startswith(prefixes):
            raise _unknown_env(name, dotted if sep else None)
    return found


def load(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective configuration. ``overrides`` are flags: {"speed": 30.0, ...}."""
    env = os.environ if environ is None else environ
    if path is None and env.get("HARVESTER_CONFIG"):
        path = env["HARVESTER_CONFIG"]
    values: dict[str, tuple[Any, bool]] = {}
    layers: list[dict[str, tuple[Any, bool]]] = []
    if path is not None:
        layers.append({k: (v, False) for k, v in _flatten(_read_toml(Path(path))).items()})
    layers.append({k: (v, True) for k, v in _from_env(env).items()})
    layers.append({k: (v, False) for k, v in (overrides or {}).items() if v is not None})
    for layer in layers:
        _merge_layer(values, layer)
    return _build(values)


def _merge_layer(values: dict[str, tuple[Any, bool]], layer: Mapping[str, tuple[Any, bool]]) -> None:
    """Later layers win. ``api.token`` and ``api.token_file`` are two spellings of one setting,
    so a token file named by a later layer (the environment) replaces a token from an earlier
    one (the TOML file) instead of losing to it."""
    if layer.get("api.token_file", ("", False))[0] and "api.token" not in layer:
        values.pop("api.token", None)
    values.update(layer)


def _build(values: Mapping[str, tuple[Any, bool]]) -> Config:
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    speed = 1.0
    tables: list[dict[str, Any]] = []
    from_env: dict[str, dict[str, str]] = {}
    for dotted, (raw, from_text) in values.items():
        if dotted == "speed":
            speed = _coerce("speed", float, raw, from_text)
            continue
        if dotted == "accounts":
            tables = raw
            continue
        if dotted.startswith("accounts."):
            _, env_name, key = dotted.split(".", 2)
            from_env.setdefault(env_name, {})[key] = raw
            continue
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or key not in _field_types(SECTIONS[section]):
            raise ConfigError(f"unknown config key: {dotted}")
        kind = _field_types(SECTIONS[section])[key]
        sections[section][key] = _coerce(dotted, kind, raw, from_text)

    api = sections["api"]
    if not api.get("token") and api.get("token_file"):
        api["token"] = Secret(read_token_file(api["token_file"]))

    database = sections["database"]
    if not database.get("direct_dsn"):
        database["direct_dsn"] = database.get("dsn", DatabaseConfig().dsn)
    normalize = sections["normalize"]
    if normalize.get("default_region"):
        normalize["default_region"] = _region(normalize["default_region"])
    built = {name: SECTIONS[name](**kwargs) for name, kwargs in sections.items()}
    config = Config(speed=speed, **built)
    config = dataclasses.replace(config, accounts=_accounts(config, tables, from_env))
    _validate(config)
    return _scale(config)


def _region(value: str) -> str:
    """A phone region code as ``phonenumbers`` knows it (upper case), or a ConfigError."""
    code = phones.region_code(value)
    if code is None:
        raise ConfigError(
            f"normalize.default_region: {value!r} is not a known region code "
            "(a two-letter ISO 3166 code such as US, GB or DE)"
        )
    return code


def _accounts(
    config: Config, tables: list[dict[str, Any]], from_env: Mapping[str, Mapping[str, str]]
) -> tuple[AccountConfig, ...]:
    """``[[accounts]]`` merged with HARVESTER_ACCOUNTS__*, plus ``default`` from the ``[api]`` keys.

    An environment NAME that matches no table defines an account of its own (named in lower case).
    """
    rate = config.rate_limit
    defaults = {key: getattr(rate, key) for key in ACCOUNT_RATE_KEYS}
    entries: list[tuple[str, dict[str, tuple[Any, bool]]]] = []
    for n, table in enumerate(tables):
        name = table["name"]
        if not isinstance(name, str) or not ACCOUNT_NAME.match(name):
            raise ConfigError(
                f"accounts[{n}].name: must be a slug (lower-case letters, digits, _ and -; "
                f"at most 63, starting with a letter or digit), got {name!r}"
            )
        entries.append((name, {k: (v, False) for k, v in table.items() if k != "name"}))
    by_env = {env_account_name(name): fields for name, fields in entries}
    if len(by_env) != len(entries):
        seen: set[str] = set()
        for name, _ in entries:
            if name in seen or env_account_name(name) in seen:
                raise ConfigError(f"accounts.{name}: defined twice (or differs only by - and _)")
            seen.add(name)
            seen.add(env_account_name(name))
    for env_name, keys in from_env.items():
        fields = by_env.get(env_name)
        if fields is None:
            name = env_name.lower()
            if not ACCOUNT_NAME.match(name):
                raise ConfigError(f"{ACCOUNT_ENV_PREFIX}{env_name}__*: {name!r} is not an account name")
            fields = {}
            entries.append((name, fields))
            by_env[env_name] = fields
        if keys.get("token_file") and "token" not in keys:
            fields.pop("token", None)  # a file named later replaces a token given earlier
        fields.update({k: (v, True) for k, v in keys.items()})
    accounts: list[AccountConfig] = []
    for name, fields in entries:
        if name == DEFAULT_ACCOUNT and (config.api.token or config.api.token_file):
            raise ConfigError(
                "accounts.default: the account 'default' is also given by api.token / "
                "api.token_file; set only one of them"
            )
        kwargs: dict[str, Any] = dict(defaults)
        for key, (raw, from_text) in fields.items():
            kwargs[key] = _coerce(f"accounts.{name}.{key}", ACCOUNT_KEYS[key], raw, from_text)
        if not kwargs.get("token") and kwargs.get("token_file"):
            kwargs["token"] = Secret(read_token_file(kwargs["token_file"], f"accounts.{name}.token_file"))
        kwargs["adopt_since_at"] = parse_since(kwargs.get("adopt_since", ""), f"accounts.{name}.adopt_since")
        accounts.append(AccountConfig(name=name, **kwargs))
    if not accounts or config.api.token or config.api.token_file:
        accounts.insert(
            0,
            AccountConfig(
                name=DEFAULT_ACCOUNT, token=config.api.token, token_file=config.api.token_file, **defaults
            ),
        )
    return tuple(accounts)


DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
DURATION_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, key: str, now: datetime | None = None) -> datetime | None:
    """``adopt_since``: "" (none), a duration back from now ("30d", "12h"), a date or a timestamp
    (UTC unless it says otherwise)."""
    if not text.strip():
        return None
    now = now or datetime.now(UTC)
    match = DURATION.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * DURATION_S[match.group(2)])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{key}: expected a date (2026-11-01), a timestamp or a duration (30d, 12h), got {text!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def read_token_file(path: str, key: str = "api.token_file") -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"{key}: {path} is empty")
    return token


def _validate(config: Config) -> None:
    if not (config.speed > 0):
        raise ConfigError("speed: must be greater than 0")
    for name in SECTIONS:
        section = getattr(config, name)
        for f in dataclasses.fields(section):
            dotted = f"{name}.{f.name}"
            value = getattr(section, f.name)
            if dotted in CHOICES and value not in CHOICES[dotted]:
                options = ", ".join(sorted(CHOICES[dotted]))
                raise ConfigError(f"{dotted}: must be one of {options}, got {value!r}")
            if f.name.endswith("_s") and value <= 0:
                raise ConfigError(f"{dotted}: must be a positive number of seconds")
    if config.rate_limit.requests_per_minute <= 0:
        raise ConfigError("rate_limit.requests_per_minute: must be greater than 0")
    if config.rate_limit.burst < 1:
        raise ConfigError("rate_limit.burst: must be at least 1")
    if config.rate_limit.max_in_flight < 1:
        raise ConfigError("rate_limit.max_in_flight: must be at least 1")
    reserve = config.rate_limit.reserve_per_minute
    if not 0 <= reserve < config.rate_limit.requests_per_minute:
        raise ConfigError("rate_limit.reserve_per_minute: must be at least 0 and below requests_per_minute")
    _validate_accounts(config.accounts)
    if config.database.pool_min < 1 or config.database.pool_max < config.database.pool_min:
        raise ConfigError("database.pool_max: must be at least database.pool_min (>= 1)")
    if not (0 <= config.polling.jitter < 1):
        raise ConfigError("polling.jitter: must be in [0, 1)")
    if config.polling.backoff_factor < 1:
        raise ConfigError("polling.backoff_factor: must be at least 1")
    if config.polling.not_found_retries < 0:
        raise ConfigError("polling.not_found_retries: must be at least 0")
    if config.polling.breaker_threshold < 1:
        raise ConfigError("polling.breaker_threshold: must be at least 1")
    if config.polling.list_poll_factor < 1:
        raise ConfigError("polling.list_poll_factor: must be at least 1")
    if config.polling.list_max_pages < 1:
        raise ConfigError("polling.list_max_pages: must be at least 1")
    _validate_base_url(config)
    _validate_listen(config.server.listen)
    for key in ("dsn", "direct_dsn"):
        if not getattr(config.database, key).startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"database.{key}: must be a postgresql:// URL")


def _validate_accounts(accounts: tuple[AccountConfig, ...]) -> None:
    tokens: dict[Secret, str] = {}
    for account in accounts:
        key = "rate_limit" if account.name == DEFAULT_ACCOUNT else f"accounts.{account.name}"
        if account.requests_per_minute <= 0:
            raise ConfigError(f"{key}.requests_per_minute: must be greater than 0")
        if account.burst < 1:
            raise ConfigError(f"{key}.burst: must be at least 1")
        if not 0 <= account.reserve_per_minute < account.requests_per_minute:
            raise ConfigError(f"{key}.reserve_per_minute: must be at least 0 and below requests_per_minute")
        if account.token:
            if account.token in tokens:
                raise ConfigError(
                    f"accounts.{account.name}: the same token as account {tokens[account.token]!r} "
                    "(one SpiderIQ client is one account)"
                )
            tokens[account.token] = account.name


def _validate_base_url(config: Config) -> None:
    url = config.api.base_url
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"api.base_url: must be an http(s) URL, got {url!r}")
    loopback = is_loopback(parts.hostname)
    if parts.scheme == "http" and not loopback and not config.api.allow_insecure:
        raise ConfigError(
            "api.base_url: plain http is refused for non-loopback hosts "
            "(set api.allow_insecure = true to override)"
        )
    if config.speed != 1.0 and not loopback:
        raise ConfigError("speed: time scaling is refused unless api.base_url is loopback")


def _validate_listen(listen: str) -> None:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"server.listen: expected HOST:PORT, got {listen!r}")


def _scale(config: Config) -> Config:
    speed = config.speed
    scaled: dict[str, Any] = {}
    for name in SECTIONS:
        section = getattr(config, name)
        changes = {
            f.name: getattr(section, f.name) / speed
            for f in dataclasses.fields(section)
            if f.name.endswith("_s")
        }
        scaled[name] = dataclasses.replace(section, **changes)
    scaled["rate_limit"] = dataclasses.replace(
        scaled["rate_limit"],
        requests_per_minute=config.rate_limit.requests_per_minute * speed,
        reserve_per_minute=config.rate_limit.reserve_per_minute * speed,
        window_s=60.0 / speed,
    )
    scaled["accounts"] = tuple(
        dataclasses.replace(
            account,
            requests_per_minute=account.requests_per_minute * speed,
            reserve_per_minute=account.reserve_per_minute * speed,
        )
        for account in config.accounts
    )
    polling = scaled["polling"]
    scaled["polling"] = dataclasses.replace(
        polling,
        list_tick_s=min(polling.list_interval_s, 1.0 / speed) / 2,
        list_overlap_api_s=config.polling.list_overlap_s,
    )
    scaled["worker"] = dataclasses.replace(
        scaled["worker"],
        housekeeping_s=min(60.0 / speed, polling.give_up_after_s / 10),
    )
    worker = scaled["worker"]
    if not worker.worker_id:
        scaled["worker"] = dataclasses.replace(worker, worker_id=f"{socket.gethostname()}:{os.getpid()}")
    return Config(speed=speed, **scaled)


def require_token(config: Config) -> str:
    """The token for requests; a clear error when none was configured."""
    if not config.api.token:
        raise ConfigError(
            "api.token: not set (use HARVESTER_API_TOKEN, HARVESTER_API_TOKEN_FILE or api.token)"
        )
    return config.api.token.reveal()


def require_tokens(config: Config) -> dict[str, str]:
    """Every account's token for requests; a clear error naming the first account without one."""
    tokens: dict[str, str] = {}
    for account in config.accounts:
        if not account.token:
            if account.name == DEFAULT_ACCOUNT:
                require_token(config)
            env = f"{ACCOUNT_ENV_PREFIX}{env_account_name(account.name)}__TOKEN_FILE"
            raise ConfigError(f"accounts.{account.name}.token: not set (use token_file, token or {env})")
        tokens[account.name] = account.token.reveal()
    return tokens


def reread_token(account: AccountConfig) -> Secret:
    """The account's token now: its token file read again (rotation), else the configured one."""
    if not account.token_file:
        return account.token
    key = "api.token_file" if account.name == DEFAULT_ACCOUNT else f"accounts.{account.name}.token_file"
    return Secret(read_token_file(account.token_file, key))


def describe(config: Config) -> dict[str, Any]:
    """A printable view of the effective configuration, the token masked."""
    out: dict[str, Any] = {"speed": config.speed}
    for name in SECTIONS:
        section = getattr(config, name)
        out[name] = {
            f.name: ("***" if isinstance(getattr(section, f.name), Secret) else getattr(section, f.name))
            for f in dataclasses.fields(section)
        }
    out["accounts"] = [
        {
            f.name: ("***" if isinstance(getattr(a, f.name), Secret) else getattr(a, f.name))
            for f in dataclasses.fields(a)
        }
        for a in config.accounts
    ]
    return out
