"""The environment layer of the configuration: which ``HARVESTER_*`` variables set which key.

The documented short names (``HARVESTER_DSN``, ``HARVESTER_API_TOKEN``, ...) and every
``HARVESTER_SECTION__KEY`` set a key; ``HARVESTER_ACCOUNTS__<NAME>__<KEY>`` sets a key of one
account. Any other ``HARVESTER_*`` variable is a ``ConfigError`` naming the nearest real name
(a typo would otherwise be a setting silently not applied), unless ``HARVESTER_IGNORE_ENV`` lists it
or a test harness owns its prefix.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from harvester.config.accounts import ACCOUNT_ENV_PREFIX
from harvester.config.types import ACCOUNT_KEYS, DERIVED, SECTIONS, field_types
from harvester.errors import ConfigError

# The documented environment names; any other HARVESTER_SECTION__KEY also works.
ENV_NAMES = {
    "HARVESTER_DSN": "database.dsn",
    "HARVESTER_DIRECT_DSN": "database.direct_dsn",
    "HARVESTER_READ_DSN": "database.read_dsn",
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


def env_names() -> list[str]:
    """Every environment name that sets a key: the short ones and each HARVESTER_SECTION__KEY."""
    names = set(ENV_NAMES)
    for section, cls in SECTIONS.items():
        for key in field_types(cls):
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


def read_env(environ: Mapping[str, str]) -> dict[str, str]:
    """{"section.key": text} (``accounts.<NAME>.<key>`` for an account) from HARVESTER_* variables."""
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
        if sep and section in SECTIONS and key in field_types(SECTIONS[section]) and dotted not in DERIVED:
            found[dotted] = value
        elif name not in ignored and not name.startswith(prefixes):
            raise _unknown_env(name, dotted if sep else None)
    return found
