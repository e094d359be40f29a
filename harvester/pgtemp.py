"""A throwaway PostgreSQL cluster for tests, the demo and benchmarks.

Finds the server binaries, runs initdb and postgres as the ``postgres`` OS user when started as root
(PostgreSQL refuses root), listens on a free loopback port, and always stops and removes the cluster.
``python -m harvester.pgtemp -- CMD ...`` runs a command with ``HARVESTER_TEST_DSN`` and
``HARVESTER_DSN`` pointing at a fresh cluster.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from harvester.errors import HarvesterError

SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "listen_addresses": "127.0.0.1",
    "log_min_messages": "warning",
}


def find_bindir() -> Path:
    """Locate the directory holding ``initdb`` and ``postgres``."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += ["/usr/local/pgsql/bin", "/usr/bin"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise HarvesterError("PostgreSQL server binaries (initdb) not found; set PG_BINDIR")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TempPostgres:
    """One disposable cluster. Use as a context manager or call ``start``/``stop``."""

    def __init__(
        self,
        settings: dict[str, str] | None = None,
        *,
        primary: TempPostgres | None = None,
        seed: Path | None = None,
    ) -> None:
        """``settings`` override ``SERVER_SETTINGS`` (e.g. durable commits for crash tests);
        ``primary`` makes this a streaming standby of that running server (see ``standby``);
        ``seed`` starts from a copy of that stopped data directory instead of ``initdb`` (or a base
        backup: a standby's copy is pointed at ``primary``), which is several times faster."""
        self.settings = {**SERVER_SETTINGS, **(settings or {})}
        self.primary = primary
        self.seed = seed
        self.bindir = find_bindir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="harvester-pg-"))
        self.datadir = self.root / "data"
        self.as_postgres = os.geteuid() == 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _argv(self, *argv: str) -> list[str]:
        if self.as_postgres:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def start(self) -> str:
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        if self.seed is not None:
            self._copy(self.seed)
        elif self.primary is not None:
            self._clone(self.primary)
        else:
            self._initdb()
        self._spawn()
        return self.dsn

    def _initdb(self) -> None:
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            self._argv(
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def _clone(self, primary: TempPostgres) -> None:
        """A streaming standby of ``primary``: a base backup with ``-R`` (standby.signal and
        primary_conninfo), as an operator sets one up."""
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            self._argv(
                str(self.bindir / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                str(self.datadir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def _copy(self, seed: Path) -> None:
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["cp", "-a", str(seed), str(self.datadir)],  # noqa: S607 - coreutils
            check=True,
            capture_output=True,
            timeout=120,
        )
        if self.primary is not None:  # the base backup's primary_conninfo names the seed's primary
            auto = self.datadir / "postgresql.auto.conf"
            auto.write_text(re.sub(r"\bport=\d+", f"port={self.primary.port}", auto.read_text()))

    def standby(self, settings: dict[str, str] | None = None) -> TempPostgres:
        """A new, not yet started streaming standby of this (running) server."""
        return TempPostgres({**self.settings, **(settings or {})}, primary=self)

    def promote(self, timeout: float = 60.0) -> None:
        """Promote this standby (``pg_ctl promote``) and wait until it accepts writes."""
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            self._argv(
                str(self.bindir / "pg_ctl"), "promote", "-w", "-t", str(int(timeout)), "-D", str(self.datadir)
            ),
            check=True,
            capture_output=True,
            timeout=timeout + 10,
        )

    def kill(self) -> None:
        """Stop the server the way a crash does (``immediate``: no checkpoint, clients cut)."""
        self._signal_stop("immediate")

    def halt(self, mode: str = "fast") -> None:
        """Stop the server and leave it stopped (``smart``, ``fast`` or ``immediate``), its data
        kept; ``restart`` or ``stop`` may follow."""
        self._signal_stop(mode)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _spawn(self) -> None:
        settings = [f"-c{key}={value}" for key, value in self.settings.items()]
        if self._log is None:
            self._log = open(self.root / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            self._argv(
                str(self.bindir / "postgres"),
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                *settings,
            ),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = (self.root / "server.log").read_text(errors="replace")
                raise HarvesterError(f"temporary PostgreSQL exited at start: {log[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                ready = subprocess.run(  # noqa: S603 - fixed argv, no shell
                    [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                    capture_output=True,
                    timeout=10,
                )
                if ready.returncode == 0:
                    return
            time.sleep(0.1)
        raise HarvesterError("temporary PostgreSQL did not become ready in time")

    def restart(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` or ``immediate``) and start it again on the same port."""
        self._signal_stop(mode)
        self._spawn()

    def _signal_stop(self, mode: str) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        # runuser forwards signals to its child, the postmaster.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        try:
            self._signal_stop("fast")
        finally:
            self.process = None
            if self._log is not None:
                self._log.close()
                self._log = None
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def temp_postgres() -> Iterator[TempPostgres]:
    with TempPostgres() as pg:
        yield pg


def main(argv: list[str] | None = None) -> int:
    """``python -m harvester.pgtemp -- CMD ...``: run CMD against a throwaway cluster."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print("usage: python -m harvester.pgtemp -- CMD [ARG ...]", file=sys.stderr)
        return 2
    with temp_postgres() as pg:
        env = dict(os.environ, HARVESTER_TEST_DSN=pg.dsn, HARVESTER_DSN=pg.dsn)
        child = subprocess.Popen(args, env=env)  # noqa: S603 - the caller's own command
        previous = signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            return child.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
