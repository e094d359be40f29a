"""A PostgreSQL primary with a streaming standby on loopback, as an operator runs one.

``Cluster`` starts both servers (the standby from ``pg_basebackup -R``), gives the multi-host DSN a
daemon uses (``target_session_attrs=read-write``), and can promote the standby, kill the primary the
way a crash does, and hold back the WAL sent to the standby (SIGSTOP on the walsender) to make a
failover lose commits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from harvester.pgtemp import TempPostgres

# Durable enough that a killed primary keeps what it committed, as production does.
DURABLE = {"fsync": "on", "synchronous_commit": "on", "wal_level": "replica", "hot_standby": "on"}


class Cluster:
    def __init__(self, primary: TempPostgres, standby: TempPostgres) -> None:
        self.primary = primary
        self.standby = standby
        self._stopped_walsender: int | None = None

    def dsn(self, database: str = "postgres", attrs: str = "read-write", login: str = "postgres") -> str:
        """Both hosts, primary first; libpq's and asyncpg's form. ``login``: ``user[:password]``."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://{login}@{hosts}/{database}?target_session_attrs={attrs}"

    def standby_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.standby.port}/{database}"

    def primary_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.primary.port}/{database}"

    async def wait_replayed(self, within_s: float = 30.0) -> None:
        """Until the standby has replayed everything the primary has written."""
        primary = await asyncpg.connect(self.primary_dsn())
        standby = await asyncpg.connect(self.standby_dsn())
        try:
            target = await primary.fetchval("SELECT pg_current_wal_lsn()")
            deadline = time.monotonic() + within_s
            while True:
                replayed = await standby.fetchval("SELECT pg_last_wal_replay_lsn()")
                if replayed is not None and replayed >= target:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"standby replayed {replayed}, primary at {target}")
                await asyncio.sleep(0.05)
        finally:
            await primary.close()
            await standby.close()

    async def hold_wal(self) -> None:
        """Stop the walsender (SIGSTOP): commits go on on the primary and stop reaching the
        standby, so a failover now loses them."""
        conn = await asyncpg.connect(self.primary_dsn())
        try:
            pid = await conn.fetchval("SELECT pid FROM pg_stat_replication LIMIT 1")
        finally:
            await conn.close()
        assert pid is not None, "no walsender"
        os.kill(pid, signal.SIGSTOP)
        self._stopped_walsender = pid

    def kill_primary(self) -> None:
        """A crash: ``immediate`` stop. A held walsender is killed first, so that nothing it held
        reaches the standby on the way down."""
        if self._stopped_walsender is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._stopped_walsender, signal.SIGKILL)
            self._stopped_walsender = None
        self.primary.kill()

    def promote(self) -> None:
        self.standby.promote()

    def stop(self) -> None:
        if self._stopped_walsender is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._stopped_walsender, signal.SIGCONT)
        try:
            self.primary.stop()
        finally:
            self.standby.stop()


_seeds: list[Path] = []  # a stopped primary's data directory and its standby's, made once


def _seeded() -> tuple[Path, Path]:
    """Data directories of a primary and its standby, both stopped cleanly (the standby first, so
    it is behind and can follow): copying them is several times faster than initdb and a base
    backup for every test."""
    if not _seeds:
        primary = TempPostgres(DURABLE)
        primary.start()
        standby = primary.standby()
        standby.start()
        standby.halt("fast")
        primary.halt("fast")
        _seeds.extend([primary.datadir, standby.datadir])
        atexit.register(shutil.rmtree, primary.root, True)
        atexit.register(shutil.rmtree, standby.root, True)
    return _seeds[0], _seeds[1]


@contextlib.contextmanager
def cluster(settings: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A running primary and streaming standby, removed afterwards."""
    primary_seed, standby_seed = _seeded()
    primary = TempPostgres({**DURABLE, **(settings or {})}, seed=primary_seed)
    primary.start()
    standby = TempPostgres(primary.settings, primary=primary, seed=standby_seed)
    try:
        standby.start()
    except BaseException:
        primary.stop()
        standby.stop()
        raise
    pair = Cluster(primary, standby)
    try:
        yield pair
    finally:
        pair.stop()
