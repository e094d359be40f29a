"""Configuration: TOML, then environment, then flags; every bad key is a one-line error naming it."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harvester import config
from harvester.errors import ConfigError
from tests.support.paths import ROOT

LOCAL = {"HARVESTER_API_BASE_URL": "http://127.0.0.1:8765"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "harvester.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_spec() -> None:
    cfg = config.load(environ={})
    assert cfg.api.base_url == "https://spideriq.di-atomic.com"
    assert cfg.rate_limit.requests_per_minute == 100
    assert cfg.rate_limit.burst == 20
    assert cfg.server.listen == "127.0.0.1:9187"
    assert cfg.log.format == "json"
    assert cfg.polling.give_up_after_s == 7 * 24 * 3600


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\ndsn = "postgresql://file/db"\n[log]\nformat = "console"\n')
    cfg = config.load(path, environ={"HARVESTER_DSN": "postgresql://env/db"})
    assert cfg.database.dsn == "postgresql://env/db"
    assert cfg.log.format == "console"
    cfg = config.load(path, environ={**LOCAL, "HARVESTER_SPEED": "2"}, overrides={"speed": 4.0})
    assert cfg.speed == 4.0


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[worker]\nlease_s = 12\n")
    cfg = config.load(environ={"HARVESTER_CONFIG": str(path)})
    assert cfg.worker.lease_s == 12


def test_generic_environment_names_reach_every_key() -> None:
    cfg = config.load(
        environ={"HARVESTER_POLLING__MAX_INTERVAL_S": "42", "HARVESTER_SERVER__ENABLED": "false"}
    )
    assert cfg.polling.max_interval_s == 42
    assert cfg.server.enabled is False


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[polling]\nbogus = 1\n", "polling.bogus"),
        ("[nosuch]\nx = 1\n", "nosuch"),
        ('[rate_limit]\nburst = "many"\n', "rate_limit.burst"),
        ("[rate_limit]\nburst = 0\n", "rate_limit.burst"),
        ("[rate_limit]\nwindow_s = 5\n", "rate_limit.window_s"),
        ("[worker]\nlease_s = -1\n", "worker.lease_s"),
        ('[polling]\ndiscovery = "psychic"\n', "polling.discovery"),
        ('[log]\nformat = "xml"\n', "log.format"),
        ('[server]\nlisten = "nowhere"\n', "server.listen"),
        ('[database]\ndsn = "mysql://x"\n', "database.dsn"),
        ("[api]\nallow_insecure = 1\n", "api.allow_insecure"),
        ("[polling]\nnot_found_retries = -1\n", "polling.not_found_retries"),
        ("[polling]\nbreaker_threshold = 0\n", "polling.breaker_threshold"),
        ('[polling]\nmax_interval_s = "5m"\n', "polling.max_interval_s"),
        ("speed = 0\n", "speed"),
    ],
)
def test_bad_file_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(write(tmp_path, text), environ={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[polling]\nlist_reconcile = 10\n",
            "polling.list_reconcile: did you mean polling.list_reconcile_s?",
        ),
        ("[poling]\nevents = 'sse'\n", "poling: did you mean polling?"),
        (
            '[[accounts]]\nname = "a"\ntoken_fil = "t"\n',
            "accounts[0].token_fil: did you mean accounts[0].token_file?",
        ),
        (
            "[polling]\nlist_tick_s = 1\n",
            "polling.list_tick_s: derived from other settings, not set directly",
        ),
        ("[polling]\nzzzzzz = 1\n", "unknown config key: polling.zzzzzz"),
    ],
)
def test_a_mistyped_file_key_gets_the_nearest_real_one(tmp_path: Path, text: str, message: str) -> None:
    """As a mistyped HARVESTER_* name does: one line, the nearest key when there is one."""
    with pytest.raises(ConfigError) as raised:
        config.load(write(tmp_path, text), environ={})
    assert str(raised.value).endswith(message)


def test_token_file_from_the_environment_beats_a_token_in_the_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("env:file:token\n")
    path = write(tmp_path, '[api]\ntoken = "toml:file:token"\n')
    cfg = config.load(path, environ={"HARVESTER_API_TOKEN_FILE": str(token_file)})
    assert cfg.api.token.reveal() == "env:file:token"
    cfg = config.load(
        path, environ={"HARVESTER_API_TOKEN_FILE": str(token_file), "HARVESTER_API_TOKEN": "env:plain:token"}
    )
    assert cfg.api.token.reveal() == "env:plain:token"
    assert config.load(path, environ={}).api.token.reveal() == "toml:file:token"


def test_bad_environment_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"polling\.nope"):
        config.load(environ={"HARVESTER_POLLING__NOPE": "1"})


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("HARVESTER_DNS", "HARVESTER_DSN"),
        ("HARVESTER_POLLING_MAX_INTERVAL_S", "HARVESTER_POLLING__MAX_INTERVAL_S"),
        ("HARVESTER_LOGLEVEL", "HARVESTER_LOG_LEVEL"),
        ("HARVESTER_SERVER_LISTEN", "HARVESTER_SERVER__LISTEN"),
        ("HARVESTER_API_TOKENFILE", "HARVESTER_API_TOKEN_FILE"),
        ("HARVESTER_DATABASE__DNS", "HARVESTER_DATABASE__DSN"),
    ],
)
def test_a_misspelt_environment_name_is_refused_with_the_nearest_one(name: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match=rf"{name}\b.*did you mean {suggestion}\?"):
        config.load(environ={name: "5"})


def test_an_unknown_environment_name_far_from_any_key_is_still_refused() -> None:
    with pytest.raises(ConfigError, match="HARVESTER_FROBNICATE: no such setting"):
        config.load(environ={"HARVESTER_FROBNICATE": "1"})


def test_every_key_has_a_valid_generic_environment_name() -> None:
    names = config.env_names()
    assert "HARVESTER_POLLING__MAX_INTERVAL_S" in names and "HARVESTER_DSN" in names
    assert "HARVESTER_RATE_LIMIT__WINDOW_S" not in names  # derived, not settable
    for name in names:
        config.load(environ={**LOCAL, name: valid_text(name)})


def valid_text(name: str) -> str:
    if name in config.ENV_NAMES:
        dotted = config.ENV_NAMES[name]
    else:
        section, _, key = name.removeprefix("HARVESTER_").lower().partition("__")
        dotted = f"{section}.{key}"
    defaults = config.describe(config.Config())
    section, _, key = dotted.partition(".")
    value = defaults[section] if not key else defaults[section][key]
    if dotted in {"api.token", "api.token_file"}:
        return ""
    if dotted == "api.base_url":
        return LOCAL["HARVESTER_API_BASE_URL"]
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_names_that_are_not_settings_are_left_alone() -> None:
    cfg = config.load(
        environ={
            "HARVESTER_TEST_DSN": "postgresql://x/y",
            "HARVESTER_TEST_ANYTHING": "1",
            "HARVESTER_CONFIG": "",
        }
    )
    assert cfg.database.dsn == "postgresql://localhost/harvester"


def test_foreign_variables_listed_in_harvester_ignore_env_are_allowed() -> None:
    env = {
        "HARVESTER_FOO": "1",
        "HARVESTER_BAR": "2",
        "HARVESTER_OTHERAPP_X": "3",
        "HARVESTER_IGNORE_ENV": "HARVESTER_FOO, HARVESTER_BAR HARVESTER_OTHERAPP_*",
    }
    assert config.load(environ=env).speed == 1.0
    with pytest.raises(ConfigError, match="HARVESTER_BAZ"):
        config.load(environ={**env, "HARVESTER_BAZ": "4"})


def test_ignore_env_does_not_hide_a_real_setting() -> None:
    """It is for names that are not settings, not a way to switch a setting off."""
    cfg = config.load(
        environ={"HARVESTER_DSN": "postgresql://env/db", "HARVESTER_IGNORE_ENV": "HARVESTER_DSN,HARVESTER_*"}
    )
    assert cfg.database.dsn == "postgresql://env/db"


def test_a_typo_in_the_environment_stops_the_cli_with_exit_2_and_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    env.update(
        {
            "HARVESTER_DSN": "postgresql://postgres@127.0.0.1:1/nowhere",
            "HARVESTER_POLLING_MAX_INTERVAL_S": "5",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "harvester", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "HARVESTER_POLLING_MAX_INTERVAL_S" in line
    assert "did you mean HARVESTER_POLLING__MAX_INTERVAL_S?" in line
    assert proc.stdout == ""


def test_bad_environment_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"rate_limit\.burst"):
        config.load(environ={"HARVESTER_RATE_LIMIT__BURST": "lots"})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[api\n"), environ={})


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "absent.toml", environ={})


def test_plain_http_refused_for_remote_hosts() -> None:
    with pytest.raises(ConfigError, match="plain http"):
        config.load(environ={"HARVESTER_API_BASE_URL": "http://api.example.com"})


def test_plain_http_allowed_on_loopback_or_when_insecure_is_set() -> None:
    assert config.load(environ={"HARVESTER_API_BASE_URL": "http://localhost:1"}).api.base_url
    cfg = config.load(
        environ={"HARVESTER_API_BASE_URL": "http://api.example.com", "HARVESTER_API__ALLOW_INSECURE": "true"}
    )
    assert cfg.api.allow_insecure


def test_speed_refused_unless_loopback() -> None:
    with pytest.raises(ConfigError, match="speed"):
        config.load(environ={"HARVESTER_SPEED": "10"})


def test_speed_scales_durations_and_rate() -> None:
    cfg = config.load(environ={**LOCAL, "HARVESTER_SPEED": "10"})
    assert cfg.worker.lease_s == pytest.approx(3.0)
    assert cfg.polling.min_interval_s == pytest.approx(0.3)
    assert cfg.rate_limit.requests_per_minute == pytest.approx(1000)
    assert cfg.rate_limit.burst == 20
    assert cfg.rate_limit.window_s == pytest.approx(6.0)


def test_token_from_file_and_never_in_repr(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("cli_abc:sk_secretvalue:secret_other\n")
    cfg = config.load(environ={"HARVESTER_API_TOKEN_FILE": str(token_file)})
    assert config.require_token(cfg) == "cli_abc:sk_secretvalue:secret_other"
    assert "sk_secretvalue" not in repr(cfg)
    assert "sk_secretvalue" not in str(config.describe(cfg))


def test_missing_token_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api\.token_file"):
        config.load(environ={"HARVESTER_API_TOKEN_FILE": str(tmp_path / "none")})


def test_missing_token_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"api\.token"):
        config.require_token(config.load(environ={}))


def test_example_config_documents_every_key() -> None:
    example = ROOT / "config.example.toml"
    cfg = config.load(example, environ={})
    text = example.read_text()
    for section, cls in config.SECTIONS.items():
        for name in config.field_types(cls):
            if f"{section}.{name}" in config.DERIVED:
                continue
            assert f"{name} =" in text or f"# {name} =" in text, f"{section}.{name} undocumented"
    assert cfg.rate_limit.burst == 20


def test_every_key_is_documented_in_the_example_and_the_configuration_guide() -> None:
    """Users configure from config.example.toml and the table of docs/configuration.md; neither may
    fall behind."""
    root = ROOT
    example = (root / "config.example.toml").read_text()
    guide = (root / "docs" / "configuration.md").read_text()
    for section, cls in config.SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f"{section}.{f.name}" in config.DERIVED:
                continue
            assert re.search(rf"^#?\s*{f.name}\s*=", example, flags=re.M), f"{section}.{f.name}"
            assert f"`{section}.{f.name}`" in guide, f"{section}.{f.name}"


def test_direct_dsn_defaults_to_the_main_dsn() -> None:
    cfg = config.load(environ={"HARVESTER_DSN": "postgresql://bouncer:6432/db"})
    assert cfg.database.direct_dsn == "postgresql://bouncer:6432/db"


def test_direct_dsn_has_a_documented_environment_name() -> None:
    cfg = config.load(
        environ={
            "HARVESTER_DSN": "postgresql://bouncer:6432/db",
            "HARVESTER_DIRECT_DSN": "postgresql://db-primary/db",
        }
    )
    assert cfg.database.dsn == "postgresql://bouncer:6432/db"
    assert cfg.database.direct_dsn == "postgresql://db-primary/db"


def test_bad_direct_dsn_is_named() -> None:
    with pytest.raises(ConfigError, match=r"database\.direct_dsn"):
        config.load(environ={"HARVESTER_DIRECT_DSN": "db-primary:5432"})


def test_read_dsn_defaults_to_the_main_dsn() -> None:
    cfg = config.load(environ={"HARVESTER_DSN": "postgresql://db1,db2/db?target_session_attrs=read-write"})
    assert cfg.database.read_dsn == "postgresql://db1,db2/db?target_session_attrs=read-write"


def test_read_dsn_has_a_documented_environment_name() -> None:
    cfg = config.load(
        environ={
            "HARVESTER_DSN": "postgresql://db1,db2/db?target_session_attrs=read-write",
            "HARVESTER_READ_DSN": "postgresql://db2/db",
        }
    )
    assert cfg.database.read_dsn == "postgresql://db2/db"
    assert cfg.database.direct_dsn == cfg.database.dsn


def test_bad_read_dsn_is_named() -> None:
    with pytest.raises(ConfigError, match=r"database\.read_dsn"):
        config.load(environ={"HARVESTER_READ_DSN": "replica:5432"})
