"""Configuration: a TOML file, then environment variables, then flags; later wins.

Everything is validated here, at start-up, into the frozen dataclasses of ``types``; a bad or
unknown key is a ``ConfigError`` whose message names the key. Durations (keys ending in ``_s``) are
divided by ``speed`` and ``requests_per_minute`` is multiplied by it, so the rest of the program
only ever sees effective values. The environment layer is ``env`` and the accounts (tokens
and per-account budgets) are ``accounts``; their public names are importable from here too,
which is where the rest of the program takes them from.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harvester.config.accounts import (
    ACCOUNT_ENV_PREFIX,
    DURATION,
    DURATION_S,
    account_tables,
    build_accounts,
    env_account_name,
    parse_since,
    read_token_file,
    require_token,
    require_tokens,
    reread_token,
    validate_accounts,
)
from harvester.config.env import (
    ENV_NAMES,
    IGNORE_ENV,
    NOT_CONFIG_ENV,
    NOT_CONFIG_PREFIXES,
    env_names,
    read_env,
)
from harvester.config.types import (
    ACCOUNT_KEYS,
    ACCOUNT_NAME,
    ACCOUNT_RATE_KEYS,
    DEFAULT_ACCOUNT,
    DEFAULT_BASE_URL,
    DERIVED,
    SECTIONS,
    AccountConfig,
    ApiConfig,
    Config,
    DatabaseConfig,
    LogConfig,
    NormalizeConfig,
    PollingConfig,
    RateLimitConfig,
    Secret,
    ServerConfig,
    WorkerConfig,
    coerce,
    field_types,
    unknown_key,
)
from harvester.errors import ConfigError
from harvester.normalize import phones

__all__ = [
    "ACCOUNT_ENV_PREFIX",
    "ACCOUNT_KEYS",
    "ACCOUNT_NAME",
    "ACCOUNT_RATE_KEYS",
    "CHOICES",
    "DEFAULT_ACCOUNT",
    "DEFAULT_BASE_URL",
    "DERIVED",
    "DURATION",
    "DURATION_S",
    "ENV_NAMES",
    "IGNORE_ENV",
    "NOT_CONFIG_ENV",
    "NOT_CONFIG_PREFIXES",
    "SECTIONS",
    "AccountConfig",
    "ApiConfig",
    "Config",
    "DatabaseConfig",
    "LogConfig",
    "NormalizeConfig",
    "PollingConfig",
    "RateLimitConfig",
    "Secret",
    "ServerConfig",
    "WorkerConfig",
    "describe",
    "env_account_name",
    "env_names",
    "field_types",
    "is_loopback",
    "load",
    "parse_since",
    "read_token_file",
    "require_token",
    "require_tokens",
    "reread_token",
]

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
            flat["accounts"] = account_tables(value)
            continue
        if name not in SECTIONS:
            raise unknown_key(name, [*SECTIONS, "speed", "accounts"])
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a table")
        known = [f"{name}.{key}" for key in field_types(SECTIONS[name])]
        for key, item in value.items():
            dotted = f"{name}.{key}"
            if dotted in DERIVED:
                raise ConfigError(f"{dotted}: derived from other settings, not set directly")
            if dotted not in known:
                raise unknown_key(dotted, [k for k in known if k not in DERIVED])
            flat[dotted] = item
    return flat


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
    layers.append({k: (v, True) for k, v in read_env(env).items()})
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
            speed = coerce("speed", float, raw, from_text)
            continue
        if dotted == "accounts":
            tables = raw
            continue
        if dotted.startswith("accounts."):
            _, env_name, key = dotted.split(".", 2)
            from_env.setdefault(env_name, {})[key] = raw
            continue
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or key not in field_types(SECTIONS[section]):
            raise ConfigError(f"unknown config key: {dotted}")
        kind = field_types(SECTIONS[section])[key]
        sections[section][key] = coerce(dotted, kind, raw, from_text)

    api = sections["api"]
    if not api.get("token") and api.get("token_file"):
        api["token"] = Secret(read_token_file(api["token_file"]))

    database = sections["database"]
    for derived in ("direct_dsn", "read_dsn"):
        if not database.get(derived):
            database[derived] = database.get("dsn", DatabaseConfig().dsn)
    normalize = sections["normalize"]
    if normalize.get("default_region"):
        normalize["default_region"] = _region(normalize["default_region"])
    built = {name: SECTIONS[name](**kwargs) for name, kwargs in sections.items()}
    config = Config(speed=speed, **built)
    config = dataclasses.replace(config, accounts=build_accounts(config, tables, from_env))
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
    validate_accounts(config.accounts)
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
    for key in ("dsn", "direct_dsn", "read_dsn"):
        if not getattr(config.database, key).startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"database.{key}: must be a postgresql:// URL")


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
