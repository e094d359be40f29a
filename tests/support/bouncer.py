"""A real PgBouncer in front of the suite's throwaway PostgreSQL, configured as a user would.

The ``pgbouncer.ini`` written here holds only what a user must set on top of the Debian package's
stock file: where to listen, which server to forward to (a wildcard ``[databases]`` entry, so every
per-test database is reachable), how clients authenticate, the pool mode, the admin user, and the
paths of its own files. Nothing that papers over client behaviour: no
``ignore_startup_parameters``, no ``max_prepared_statements``.

PgBouncer refuses to run as root, so as root it runs as the ``postgres`` OS user, like the
throwaway PostgreSQL (``harvester.pgtemp``). When the binary is missing, tests that need it are
skipped, except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

from harvester.pgtemp import free_port

MODES = ("transaction", "session")


def find_pgbouncer() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    for candidate in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer"):
        if Path(candidate).is_file():
            return candidate
    return None


def require_pgbouncer() -> str:
    """The binary, or a skip (a failure in CI: there .ci/run installs it)."""
    binary = find_pgbouncer()
    if binary is not None:
        return binary
    reason = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """One PgBouncer process forwarding every database of ``server_dsn``'s server."""

    def __init__(
        self, binary: str, server_dsn: str, pool_mode: str, users: Mapping[str, str] | None = None
    ) -> None:
        """``users``: more logins (name → password) PgBouncer accepts besides the server's own."""
        if pool_mode not in MODES:
            raise ValueError(f"pool_mode: {pool_mode!r}")
        self.binary = binary
        self.server = urlsplit(server_dsn)
        self.pool_mode = pool_mode
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="harvester-pgbouncer-"))
        self.as_postgres = os.geteuid() == 0
        self.users = dict(users or {})
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def user(self) -> str:
        return unquote(self.server.username or "postgres")

    def dsn_for(self, direct_dsn: str) -> str:
        """The same database and credentials as ``direct_dsn``, through this PgBouncer."""
        parts = urlsplit(direct_dsn)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def config_text(self) -> str:
        password = unquote(self.server.password or "")
        forward = f"host={self.server.hostname or '127.0.0.1'} port={self.server.port or 5432}"
        lines = [
            "[databases]",
            f"* = {forward}",
            "",
            "[pgbouncer]",
            f"logfile = {self.root / 'pgbouncer.log'}",
            f"pidfile = {self.root / 'pgbouncer.pid'}",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            f"unix_socket_dir = {self.root}",
            # The throwaway server trusts loopback; with a password, clients give it to PgBouncer.
            f"auth_type = {'md5' if password else 'trust'}",
            f"auth_file = {self.root / 'userlist.txt'}",
            f"admin_users = {self.user}",
            f"pool_mode = {self.pool_mode}",
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        logins = {self.user: unquote(self.server.password or ""), **self.users}
        (self.root / "userlist.txt").write_text(
            "".join(f"{_quote(name)} {_quote(password)}\n" for name, password in logins.items())
        )
        (self.root / "pgbouncer.ini").write_text(self.config_text())
        if self.as_postgres:
            for path in (self.root, *self.root.iterdir()):
                shutil.chown(path, "postgres", "postgres")
        self._log = open(self.root / "stderr.log", "ab")  # noqa: SIM115 - closed in stop()
        argv = [self.binary, str(self.root / "pgbouncer.ini")]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True
        )
        self._wait_ready()

    def log_text(self) -> str:
        parts = []
        for name in ("pgbouncer.log", "stderr.log"):
            with contextlib.suppress(OSError):
                parts.append((self.root / name).read_text(errors="replace"))
        return "\n".join(parts)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start:\n{self.log_text()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen in time:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        process = self.process
        try:
            if process is not None and process.poll() is None:
                # SIGINT: "safe shutdown" would wait for clients; SIGTERM is immediate.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
        finally:
            self.process = None
            if self._log is not None:
                self._log.close()
                self._log = None
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def version(binary: str) -> str:
    out = subprocess.run(  # noqa: S603 - our own pgbouncer binary
        [binary, "--version"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return out.stdout.splitlines()[0] if out.stdout else "unknown"
