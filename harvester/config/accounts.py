"""Accounts: each ``[[accounts]]`` table (or ``HARVESTER_ACCOUNTS__<NAME>__<KEY>`` in the
environment) is one SpiderIQ client with its own token and budget; the single-credential keys
(``api.token``, ``api.token_file`` and ``[rate_limit]``) are the account ``default``. Per-account
rate keys default to ``[rate_limit]``'s.

This module turns those tables and variables into ``AccountConfig`` values and checks them (a slug
for a name, one account per token, a budget that leaves room for the reserve), and owns the tokens:
reading a token file, reading it again on rotation, and refusing to start without one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harvester.config.types import (
    ACCOUNT_KEYS,
    ACCOUNT_NAME,
    ACCOUNT_RATE_KEYS,
    DEFAULT_ACCOUNT,
    AccountConfig,
    Config,
    Secret,
    coerce,
    unknown_key,
)
from harvester.errors import ConfigError

ACCOUNT_ENV_PREFIX = "HARVESTER_ACCOUNTS__"


def account_tables(value: Any) -> list[dict[str, Any]]:
    """``[[accounts]]``: a list of tables with known keys and a ``name`` each."""
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise ConfigError("accounts: expected [[accounts]] tables")
    tables: list[dict[str, Any]] = []
    for n, table in enumerate(value):
        for key in table:
            if key not in ACCOUNT_KEYS:
                raise unknown_key(f"accounts[{n}].{key}", [f"accounts[{n}].{k}" for k in ACCOUNT_KEYS])
        if "name" not in table:
            raise ConfigError(f"accounts[{n}].name: required")
        tables.append(dict(table))
    return tables


def env_account_name(name: str) -> str:
    """The NAME part of HARVESTER_ACCOUNTS__<NAME>__<KEY> for an account name."""
    return name.upper().replace("-", "_")


def build_accounts(
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
            kwargs[key] = coerce(f"accounts.{name}.{key}", ACCOUNT_KEYS[key], raw, from_text)
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


def validate_accounts(accounts: tuple[AccountConfig, ...]) -> None:
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
