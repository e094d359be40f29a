"""Accounts in config: ``[[accounts]]``, HARVESTER_ACCOUNTS__<NAME>__<KEY>, and ``default``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from harvester import config
from harvester.errors import ConfigError

LOCAL = {"HARVESTER_API_BASE_URL": "http://127.0.0.1:8765"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "harvester.toml"
    path.write_text(text)
    return path


def token_file(tmp_path: Path, name: str, token: str) -> Path:
    path = tmp_path / name
    path.write_text(token + "\n")
    return path


def test_the_single_credential_keys_are_the_account_default() -> None:
    cfg = config.load(environ={"HARVESTER_API_TOKEN": "a:b:c"})
    assert cfg.account_names == ("default",)
    [account] = cfg.accounts
    assert account.token.reveal() == "a:b:c"
    assert (account.requests_per_minute, account.burst, account.reserve_per_minute) == (100.0, 20, 0.0)


def test_without_any_token_there_is_still_the_account_default() -> None:
    """``status`` and ``enqueue`` need no token: their configuration names ``default`` anyway."""
    assert config.load(environ={}).account_names == ("default",)


def test_accounts_from_toml_with_their_own_rates_and_rate_limit_defaults(tmp_path: Path) -> None:
    acme = token_file(tmp_path, "acme", "acme:k:s")
    path = write(
        tmp_path,
        f'[rate_limit]\nburst = 10\n[[accounts]]\nname = "acme"\ntoken_file = "{acme}"\n'
        "requests_per_minute = 50\nreserve_per_minute = 5\n"
        '[[accounts]]\nname = "team-b"\ntoken = "b:k:s"\n',
    )
    cfg = config.load(path, environ={})
    assert cfg.account_names == ("acme", "team-b")
    first, second = cfg.accounts
    assert first.token.reveal() == "acme:k:s" and first.token_file == str(acme)
    assert (first.requests_per_minute, first.burst, first.reserve_per_minute) == (50.0, 10, 5.0)
    assert (second.requests_per_minute, second.burst) == (100.0, 10)


def test_api_token_beside_accounts_adds_the_account_default(tmp_path: Path) -> None:
    path = write(tmp_path, '[[accounts]]\nname = "acme"\ntoken = "acme:k:s"\n')
    cfg = config.load(path, environ={"HARVESTER_API_TOKEN": "d:k:s"})
    assert cfg.account_names == ("default", "acme")


def test_environment_sets_a_listed_account_and_defines_new_ones(tmp_path: Path) -> None:
    path = write(tmp_path, '[[accounts]]\nname = "team-b"\ntoken = "file:k:s"\n')
    secret = token_file(tmp_path, "tok", "env:k:s")
    cfg = config.load(
        path,
        environ={
            "HARVESTER_ACCOUNTS__TEAM_B__TOKEN_FILE": str(secret),  # replaces the TOML token
            "HARVESTER_ACCOUNTS__TEAM_B__BURST": "5",
            "HARVESTER_ACCOUNTS__OTHER__TOKEN": "other:k:s",
            "HARVESTER_ACCOUNTS__OTHER__ADOPT": "true",
        },
    )
    assert cfg.account_names == ("team-b", "other")
    team_b, other = cfg.accounts
    assert team_b.token.reveal() == "env:k:s" and team_b.burst == 5
    assert other.token.reveal() == "other:k:s" and other.adopt


def test_speed_scales_every_accounts_rate(tmp_path: Path) -> None:
    path = write(tmp_path, '[[accounts]]\nname = "a"\ntoken = "a:k:s"\nrequests_per_minute = 60\n')
    cfg = config.load(path, environ={**LOCAL, "HARVESTER_SPEED": "10"})
    assert cfg.accounts[0].requests_per_minute == 600.0


@pytest.mark.parametrize(
    ("toml", "env", "named"),
    [
        ('[[accounts]]\nname = "Acme"\n', {}, "accounts[0].name"),
        ('[[accounts]]\ntoken = "x:y:z"\n', {}, "accounts[0].name"),
        ('[[accounts]]\nname = "a"\nbogus = 1\n', {}, "accounts[0].bogus"),
        ('[[accounts]]\nname = "a"\nburst = 0\n', {}, "accounts.a.burst"),
        ('[[accounts]]\nname = "a"\nrequests_per_minute = -1\n', {}, "accounts.a.requests_per_minute"),
        ('[[accounts]]\nname = "a"\nreserve_per_minute = 100\n', {}, "accounts.a.reserve_per_minute"),
        ('[[accounts]]\nname = "a"\nadopt_since = "last week"\n', {}, "accounts.a.adopt_since"),
        ('[[accounts]]\nname = "a"\n[[accounts]]\nname = "a"\n', {}, "accounts.a"),
        ('[[accounts]]\nname = "a-b"\n[[accounts]]\nname = "a_b"\n', {}, "accounts.a"),
        ('[[accounts]]\nname = "a"\ntoken_file = "/nonexistent/t"\n', {}, "accounts.a.token_file"),
        ("", {"HARVESTER_ACCOUNTS__A__COLOUR": "red"}, "HARVESTER_ACCOUNTS__A__COLOUR"),
        ("", {"HARVESTER_ACCOUNTS__A__BURST": "many"}, "accounts.a.burst"),
        (
            '[[accounts]]\nname = "default"\ntoken = "x:y:z"\n',
            {"HARVESTER_API_TOKEN": "d:k:s"},
            "accounts.default",
        ),
        ('accounts = "a"\n', {}, "accounts"),
    ],
)
def test_bad_accounts_are_one_line_errors_naming_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, toml), environ=env)
    message = str(caught.value)
    assert named in message and "\n" not in message


def test_two_accounts_with_one_token_are_refused_without_showing_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[accounts]]\nname = "a"\ntoken = "same:k:s3cret"\n'
        '[[accounts]]\nname = "b"\ntoken = "same:k:s3cret"\n',
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert "accounts.b" in str(caught.value) and "s3cret" not in str(caught.value)


def test_tokens_never_print(tmp_path: Path) -> None:
    path = write(tmp_path, '[[accounts]]\nname = "a"\ntoken = "a:k:s3cret"\n')
    cfg = config.load(path, environ={})
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(config.describe(cfg))
    assert config.describe(cfg)["accounts"][0]["token"] == "***"


def test_a_missing_token_names_the_account_and_its_environment_name(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '[[accounts]]\nname = "team-b"\n'), environ={})
    with pytest.raises(ConfigError, match=r"accounts\.team-b\.token.*HARVESTER_ACCOUNTS__TEAM_B__TOKEN_FILE"):
        config.require_tokens(cfg)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T12:00:00+01:00", datetime(2026, 11, 1, 11, tzinfo=UTC)),
        ("30d", datetime(2026, 11, 1, tzinfo=UTC)),
        ("12h", datetime(2026, 11, 30, 12, tzinfo=UTC)),
        ("90m", datetime(2026, 11, 30, 22, 30, tzinfo=UTC)),
        ("", None),
    ],
)
def test_adopt_since_is_a_date_a_timestamp_or_a_duration(text: str, expected: datetime | None) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert config.parse_since(text, "accounts.a.adopt_since", now) == expected


def test_reread_token_reads_the_file_again(tmp_path: Path) -> None:
    secret = token_file(tmp_path, "tok", "old:k:s")
    cfg = config.load(write(tmp_path, f'[[accounts]]\nname = "a"\ntoken_file = "{secret}"\n'), environ={})
    secret.write_text("new:k:s\n")
    assert config.reread_token(cfg.accounts[0]).reveal() == "new:k:s"
    secret.write_text("")
    with pytest.raises(ConfigError, match=r"accounts\.a\.token_file"):
        config.reread_token(cfg.accounts[0])
