"""sd_notify against real unix datagram sockets: a path in a tmp dir and an abstract name."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvester.daemon import sd_notify as notify
from harvester.daemon.liveness import watchdog


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def test_ready_reaches_a_path_socket(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify.ready("harvesting")
    assert sock.recv(4096) == b"READY=1\nSTATUS=harvesting"


def test_each_message_is_one_datagram(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify.watchdog()
    assert notify.status("3 in flight")
    assert notify.stopping()
    assert [sock.recv(4096) for _ in range(3)] == [b"WATCHDOG=1", b"STATUS=3 in flight", b"STOPPING=1"]


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"harvester-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False
    assert notify.notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": ""}) is False


def test_unreachable_socket_is_not_fatal(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "missing.sock")}
    assert notify.notify("READY=1", environ=env) is False
    assert notify.notify("READY=1", environ={"NOTIFY_SOCKET": "relative.sock"}) is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000"}, 0.5),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert notify.watchdog_interval(env) == expected


def test_watchdog_interval_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert notify.watchdog_interval() == 20.0


async def test_the_watchdog_is_fed_only_while_the_loop_ticks(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``liveness.watchdog``: WATCHDOG=1 at half systemd's interval, never for a stalled loop."""
    sock, path = receiver
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    tick = time.monotonic()
    stop = asyncio.Event()
    task = asyncio.create_task(watchdog(lambda: tick, stop))
    await asyncio.sleep(0.02)
    assert sock.recv(4096) == b"WATCHDOG=1"  # the loop just ticked
    await asyncio.sleep(0.25)  # no tick since: the loop looks stuck
    while True:  # drain what was sent while the tick was still fresh
        try:
            sock.recv(4096)
        except BlockingIOError:
            break
    await asyncio.sleep(0.15)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)  # nothing more for a stalled loop
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_no_watchdog_asked_for_means_no_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    await asyncio.wait_for(watchdog(lambda: 0.0, asyncio.Event()), 1)  # returns at once
