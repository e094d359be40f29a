"""What the database seam decides about a node and a connection, without a database: which errors
mean "leave this node", what says a node takes no writes, which errors are a standby's recovery
conflict, and the keepalive options every connection's socket gets."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import asyncpg
import pytest

from harvester import db
from harvester.errors import DatabaseError


@pytest.mark.parametrize(
    ("exc", "leave"),
    [
        (asyncpg.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"), True),
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"), True),
        (asyncpg.CrashShutdownError("crash"), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), True),
        (asyncpg.ConnectionFailureError("x"), True),
        (asyncpg.UniqueViolationError("duplicate key"), False),
        (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), False),
        (asyncpg.SerializationError("could not serialize access"), False),
        (TimeoutError(), False),
        (OSError("connection refused"), False),
    ],
)
def test_which_errors_leave_the_node(exc: BaseException, leave: bool) -> None:
    assert db.node_lost(exc) is leave


def test_a_standby_or_a_read_only_primary_takes_no_writes() -> None:
    def conn(**settings: str) -> asyncpg.Connection:
        return SimpleNamespace(get_settings=lambda: SimpleNamespace(**settings))  # type: ignore[return-value]

    assert db.read_only(conn(in_hot_standby="on", default_transaction_read_only="off"))
    assert db.read_only(conn(in_hot_standby="off", default_transaction_read_only="on"))
    assert not db.read_only(conn(in_hot_standby="off", default_transaction_read_only="off"))
    assert not db.read_only(conn())  # a server before 14 reports neither: the connect-time check stands


def test_a_recovery_conflict_is_told_from_other_serialization_failures() -> None:
    conflict = asyncpg.SerializationError("canceling statement due to conflict with recovery")
    assert db.recovery_conflict(conflict)
    assert not db.recovery_conflict(asyncpg.SerializationError("could not serialize access"))
    assert not db.recovery_conflict(asyncpg.QueryCanceledError("conflict with recovery"))
    # a session the standby ended while its client was not reading
    ended = asyncpg.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation: "
        "terminating connection due to conflict with recovery"
    )
    assert db.recovery_conflict(ended)


def test_the_guard_names_the_standby_settings_for_a_recovery_conflict() -> None:
    def export() -> None:
        with db.guard("export"):
            raise asyncpg.SerializationError("canceling statement due to conflict with recovery")

    with pytest.raises(DatabaseError, match=r"hot_standby_feedback.*max_standby_streaming_delay"):
        export()


def test_every_tcp_connection_gets_keepalives_and_a_user_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        db.tune_socket(sock, 10.0)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000


def test_a_time_scaled_keepalive_never_asks_the_kernel_for_zero_seconds() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        db.tune_socket(sock, 0.5)  # keepalive_s 5 at speed 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 1


def test_a_unix_socket_is_left_alone() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        db.tune_socket(left, 10.0)  # no TCP options to set, and no error
        assert left.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


def test_only_a_declared_jump_is_a_gap_a_consumer_may_pass() -> None:
    from datetime import UTC, datetime

    from harvester.db.feed import Jump, undeclared_gaps

    jump = Jump(timeline=2, first_change=2 << 40, last_before=4, jumped_at=datetime.now(UTC))
    assert undeclared_gaps([1, 2, 3, 4, 2 << 40, (2 << 40) + 1], [jump]) == []
    assert undeclared_gaps([1, 2, 4], [jump]) == [(2, 4)]
    assert undeclared_gaps([1, 2, 3, (2 << 40) + 1], [jump]) == [(3, (2 << 40) + 1)]
    assert undeclared_gaps([6, 7], [], start=5) == []
