"""Shared fixtures: one throwaway PostgreSQL per test session, a fresh database per test.

``HARVESTER_TEST_DSN`` points the suite at an existing server instead (it needs CREATEDB). The
migrated schema is built once into a template database; each test gets a copy, which takes a few
tens of milliseconds and isolates tests completely.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import structlog

from harvester.config import Config
from harvester.db import migrate
from harvester.pgtemp import TempPostgres
from tests.support import configs

SHARED = Path(__file__).resolve().parents[2] / "shared"
SEED_SAMPLES = Path(__file__).resolve().parent / "fixtures" / "seed"
API_SAMPLES = Path(__file__).resolve().parent / "fixtures" / "spideriq"


# Every test gets a minute (pyproject's ``timeout``); the tiers that run whole daemons against the
# time-scaled simulator get five unless a test declares its own ``@pytest.mark.timeout``.
LONG_TIERS = frozenset({"e2e", "field", "bench", "chaos"})
LONG_TIER_TIMEOUT_S = 300


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).resolve().parent
    for item in items:
        parts = item.path.resolve().relative_to(tests).parts
        if parts[0] in LONG_TIERS and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(LONG_TIER_TIMEOUT_S))


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(autouse=True)
def detach_log_handlers() -> Iterator[None]:
    """``logs.setup`` routes structlog and library logging to the stream of the moment (pytest's
    capture of stdout, or a test's own); that stream dies with the test, so neither may outlive it."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "harvester", False)]:
        root.removeHandler(handler)
    structlog.reset_defaults()


@pytest.fixture
def cfg() -> Config:
    """A loaded configuration with nothing set but a loopback API and a test token
    (``tests.support.configs.loaded``; a test that needs more calls it with its overrides)."""
    return configs.loaded()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The DSN of a server the suite may create databases on."""
    external = os.environ.get("HARVESTER_TEST_DSN")
    if external:
        yield external
        return
    with TempPostgres() as pg:
        yield pg.dsn


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[str]:
    name = f"harvester_tmpl_{os.getpid()}"

    async def build() -> None:
        admin = await asyncpg.connect(pg_server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(with_database(pg_server, name))
        try:
            await migrate.apply(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(pg_server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(build())
    yield name
    asyncio.run(drop())


@pytest.fixture
async def db_dsn(pg_server: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}" STRATEGY FILE_COPY')
    finally:
        await admin.close()
    yield with_database(pg_server, name)
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def empty_db_dsn(pg_server: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = f"e_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(pg_server, name)
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def conn(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the test's own database (room for a few concurrent claimers)."""
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=6)
    assert p is not None
    try:
        yield p
    finally:
        await p.close()
