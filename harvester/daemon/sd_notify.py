"""systemd's notify protocol (``sd_notify``) in a few lines of socket code, no dependencies.

systemd passes ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for an abstract socket) to a
``Type=notify`` service; the service sends newline-separated ``KEY=VALUE`` datagrams to it:
``READY=1`` once started, ``STATUS=...`` for ``systemctl status``, ``WATCHDOG=1`` as a keep-alive
and ``STOPPING=1`` on shutdown. Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, and a
notification that cannot be delivered is never fatal: the daemon keeps working without it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def _address(environ: Mapping[str, str]) -> str | bytes | None:
    path = environ.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    if path.startswith("@"):
        # An abstract socket: a leading NUL byte instead of the '@'.
        return b"\0" + path[1:].encode()
    if not path.startswith("/"):
        return None  # systemd only ever hands out absolute paths or abstract names
    return path


def notify(*lines: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``lines`` (e.g. ``"READY=1"``, ``"STATUS=harvesting"``) as one datagram.

    Returns whether a message was sent; False when not under systemd or when sending failed.
    """
    address = _address(os.environ if environ is None else environ)
    if address is None or not lines:
        return False
    payload = "\n".join(lines).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
    except OSError:
        return False
    return True


def ready(status: str | None = None) -> bool:
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """systemd's watchdog timeout in seconds (``WATCHDOG_USEC``), or None when not enabled for us.

    ``WATCHDOG_PID``, when set, must be this process: the variables may have been inherited by a
    child that systemd does not watch. Send ``WATCHDOG=1`` at half this interval.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000
