"""What ``status`` and ``show`` print, on plain values: the accounts of the report, a part the
role may not read, and a stdout whose reader went away."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

import asyncpg
import pytest

from harvester.commands import output
from harvester.errors import DatabaseError

LIMITER = {"account": "acme", "credential": "abababababab", "in_window": 3, "limit": 100}
DISCOVERY = {"account": "acme", "credential": "abababababab", "passes": 2}
NO_POOL: Any = None  # the reads below are fakes that never touch it


def test_every_account_configured_or_holding_jobs_is_reported_with_every_state() -> None:
    accounts = output.account_report(
        {"ghost": {"pending": 2}, "acme": {"harvested": 1}}, ["acme", "spare"], None, None
    )
    assert list(accounts) == ["acme", "ghost", "spare"]
    assert {name: entry["configured"] for name, entry in accounts.items()} == {
        "acme": True,
        "ghost": False,
        "spare": True,
    }
    assert accounts["ghost"]["jobs"] == {
        "pending": 2,
        "harvested": 0,
        "failed": 0,
        "cancelled": 0,
        "not_found": 0,
        "rejected": 0,
        "expired": 0,
    }
    assert sum(accounts["spare"]["jobs"].values()) == 0


def test_an_account_gets_its_own_limiter_and_discovery_rows() -> None:
    accounts = output.account_report({"acme": {"pending": 1}}, ["acme", "other"], [LIMITER], [DISCOVERY])
    assert accounts["acme"]["limiter"] == LIMITER and accounts["acme"]["discovery"] == DISCOVERY
    assert accounts["other"]["limiter"] is None and accounts["other"]["discovery"] is None


def refusing(cause: BaseException) -> output.Part:
    async def read(pool: Any) -> list[dict[str, Any]]:
        raise DatabaseError(f"status: database error: {cause}") from cause

    return read


async def test_a_part_the_role_may_not_read_is_named_with_the_reason_and_left_out() -> None:
    hidden: dict[str, str] = {}
    denied = asyncpg.InsufficientPrivilegeError("permission denied for view limiter_status")
    found = await output.readable("limiter", refusing(denied), NO_POOL, hidden)
    assert found is None
    assert hidden == {"limiter": "permission denied for view limiter_status"}


async def test_any_other_failure_of_a_part_is_raised() -> None:
    hidden: dict[str, str] = {}
    missing = asyncpg.UndefinedTableError('relation "harvester.discovery_status" does not exist')
    with pytest.raises(DatabaseError, match="does not exist"):
        await output.readable("discovery", refusing(missing), NO_POOL, hidden)
    assert hidden == {}


async def test_a_part_the_role_may_read_is_returned_and_nothing_is_hidden() -> None:
    async def read(pool: Any) -> list[dict[str, Any]]:
        return [LIMITER]

    hidden: dict[str, str] = {}
    assert await output.readable("limiter", read, NO_POOL, hidden) == [LIMITER]
    assert hidden == {}


@pytest.fixture
def pipe() -> Iterator[tuple[int, IO[str]]]:
    """A pipe: its read end, and its write end as a text stream (what a piped stdout is)."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    try:
        yield read_end, stream
    finally:
        stream.close()
        with contextlib.suppress(OSError):  # the test may have closed it
            os.close(read_end)


def test_stdout_whose_reader_is_there_is_not_gone(
    pipe: tuple[int, IO[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    read_end, stream = pipe
    monkeypatch.setattr(sys, "stdout", stream)  # here: pytest sets its own between setup and call
    assert sys.stdout.fileno() == stream.fileno()
    assert output.stdout_gone() is False
    os.write(stream.fileno(), b"still read")
    assert os.read(read_end, 100) == b"still read"


def test_stdout_whose_reader_left_is_gone_and_then_silent(
    pipe: tuple[int, IO[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``status | head -1``: the interpreter's last flush would fail again after the reader left;
    once stdout is found gone it is /dev/null, and writes succeed."""
    read_end, stream = pipe
    monkeypatch.setattr(sys, "stdout", stream)
    os.close(read_end)
    with pytest.raises(BrokenPipeError):
        os.write(stream.fileno(), b"x")
    assert output.stdout_gone() is True
    assert os.write(stream.fileno(), b"more rows") == len(b"more rows")


def test_a_stdout_without_a_file_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed:
        def fileno(self) -> int:
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert output.stdout_gone() is True
