"""The ``harvester`` command as users and scripts run it: a subprocess, its output and exit code.

Exit codes are the contract: 0 ok, 1 runtime failure, 2 usage or configuration error with one
line on stderr and no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from tests.support.commands import assert_one_line_error, harvester
from tests.support.paths import SEED
from tests.support.rows import one

COMMANDS = (
    "migrate",
    "run",
    "enqueue",
    "status",
    "show",
    "export",
    "import",
    "reprocess",
    "requeue",
    "sim",
    "demo",
)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    proc = harvester(command, "--help")
    assert proc.returncode == 0 and "usage: harvester" in proc.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bogus"], ["bogus"]),
        ([], ["COMMAND"]),
        (["run", "--max-seconds", "abc"], ["--max-seconds"]),
        (["run", "--max-seconds", "0"], ["--max-seconds"]),
        (["requeue", "--state", "pending"], ["--state"]),
        (["requeue", "--state", "nosuch"], ["--state"]),
        (["enqueue", "--priority", "40000", str(uuid4())], ["--priority"]),
        (["enqueue", "--tag", "novalue", str(uuid4())], ["--tag"]),
        (["enqueue"], ["no job ids"]),
        (["reprocess"], ["--all"]),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], words: list[str]) -> None:
    assert_one_line_error(harvester(*args), 2, *words)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"HARVESTER_POLLING__MAX_INTERVAL_S": "-1"}, "polling.max_interval_s"),
        ({"HARVESTER_POLLING__NOT_FOUND_RETRIES": "-1"}, "polling.not_found_retries"),
        ({"HARVESTER_RATE_LIMIT__BURST": "1.5"}, "rate_limit.burst"),
        ({"HARVESTER_LOG_FORMAT": "xml"}, "log.format"),
        ({"HARVESTER_SPEED": "5"}, "speed"),
        ({"HARVESTER_API_BASE_URL": "http://api.example.com"}, "api.base_url"),
        ({"HARVESTER_POLLING__NOPE": "1"}, "polling.nope"),
        ({"HARVESTER_NORMALIZE__DEFAULT_REGION": "XX"}, "normalize.default_region"),
        ({"HARVESTER_API_TOKEN_FILE": "/nonexistent/token"}, "api.token_file"),
    ],
)
def test_configuration_errors_name_the_key_and_exit_2(env: dict[str, str], key: str) -> None:
    assert_one_line_error(harvester("status", env=env), 2, key)


def test_a_bad_config_file_value_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text('[worker]\nlease_s = "long"\n')
    assert_one_line_error(harvester("status", "--config", str(path)), 2, "worker.lease_s")
    assert_one_line_error(harvester("status", env={"HARVESTER_CONFIG": str(path)}), 2, "worker.lease_s")


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["migrate"],
        ["enqueue", str(uuid4())],
        ["requeue", "--state", "failed"],
        ["reprocess", "--all"],
    ],
)
def test_a_dead_database_is_a_runtime_failure(args: list[str]) -> None:
    assert_one_line_error(harvester(*args), 1, "cannot connect")


def test_run_against_a_missing_database_exits_1(db_dsn: str) -> None:
    """(A refused port is retried for half a minute first, as a daemon starting before its
    database should; a database that does not exist fails at once.)"""
    missing = db_dsn.rsplit("/", 1)[0] + "/no_such_database"
    proc = harvester("run", "--max-seconds", "5", dsn=missing, env={"HARVESTER_API_TOKEN": "a:b:c"})
    assert_one_line_error(proc, 1, "no_such_database")


@pytest.mark.parametrize("args", [["status"], ["enqueue", str(uuid4())], ["requeue", "--state", "failed"]])
def test_an_unmigrated_database_is_a_runtime_failure_that_says_migrate(
    empty_db_dsn: str, args: list[str]
) -> None:
    assert_one_line_error(harvester(*args, dsn=empty_db_dsn), 1, "harvester migrate")


async def test_enqueue_is_all_or_nothing_and_names_each_bad_line(db_dsn: str, tmp_path: Path) -> None:
    good = [str(uuid4()) for _ in range(3)]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{good[0]}\nnot-a-uuid\n\n{good[1]}\n12345\n")
    proc = harvester("enqueue", good[2], "bogus", "--file", str(ids), dsn=db_dsn)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "argument 2" in proc.stderr and "bogus" in proc.stderr
    assert "line 2" in proc.stderr and "not-a-uuid" in proc.stderr
    assert "line 5" in proc.stderr and "12345" in proc.stderr
    conn = await asyncpg.connect(db_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM harvester.jobs") == 0
        stdin = f"{good[0]}\n{good[1]}\n{good[0]}\n"
        proc = harvester(
            "enqueue",
            "--file",
            "-",
            "--tag",
            "campaign=q4",
            "--tag",
            "src=a=b",
            "--priority",
            "5",
            dsn=db_dsn,
            stdin=stdin,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {"enqueued": 2, "duplicates": 0}
        proc = harvester("enqueue", good[0], good[2], dsn=db_dsn)
        assert json.loads(proc.stdout) == {"enqueued": 1, "duplicates": 1}
        rows = {str(r["job_id"]): r for r in await conn.fetch("SELECT * FROM harvester.jobs")}
    finally:
        await conn.close()
    assert set(rows) == set(good)
    assert rows[good[0]]["priority"] == 5 and rows[good[2]]["priority"] == 0
    assert json.loads(rows[good[1]]["tags"]) == {"campaign": "q4", "src": "a=b"}
    assert all(r["state"] == "pending" for r in rows.values())


def test_enqueue_from_an_empty_stdin_enqueues_nothing_and_succeeds(db_dsn: str) -> None:
    proc = harvester("enqueue", "--file", "-", dsn=db_dsn, stdin="\n# nothing today\n")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"enqueued": 0, "duplicates": 0}


async def test_status_json_reports_states_age_polls_errors_and_limiter(db_dsn: str) -> None:
    conn = await asyncpg.connect(db_dsn)
    try:
        await conn.execute(
            "INSERT INTO harvester.jobs (job_id, enqueued_at) VALUES ($1, now() - interval '90 s')", uuid4()
        )
        await conn.execute(
            "INSERT INTO harvester.jobs (job_id, state, polls, last_http_status, last_error, "
            "finished_at) VALUES ($1, 'failed', 3, 410, 'crawler crashed', now())",
            uuid4(),
        )
    finally:
        await conn.close()
    proc = harvester("status", "--json", dsn=db_dsn)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["jobs"]["pending"] == 1 and report["jobs"]["failed"] == 1
    assert set(report["jobs"]) == {
        "pending",
        "harvested",
        "failed",
        "cancelled",
        "not_found",
        "rejected",
        "expired",
    }
    assert 85 <= report["oldest_pending_age_s"] < 600
    assert report["polls_spent"] == 3
    assert report["recent_errors"][0]["error"] == "crawler crashed"
    assert isinstance(report["limiter"], list)


async def test_import_reads_a_body_the_way_the_daemon_reads_a_200(db_dsn: str) -> None:
    """A failed body ends its job failed with the API's message; a body of a job still running
    is reported and stores nothing, not a harvested job without data."""
    job = UUID(json.loads((SEED / "failed-410.json").read_text())["job_id"])
    proc = harvester("import", str(SEED / "processing-202.json"), dsn=db_dsn)
    assert proc.returncode == 1 and "not finished" in proc.stderr
    assert json.loads(proc.stdout) == {"stored": 0, "rejected": 0, "skipped": 1}
    conn = await asyncpg.connect(db_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM harvester.jobs") == 0
        for _ in range(2):
            proc = harvester("import", str(SEED / "failed-410.json"), dsn=db_dsn)
            assert proc.returncode == 0, proc.stderr
            row = await one(
                conn,
                "SELECT j.state, j.last_error, r.error_message FROM harvester.jobs j "
                "JOIN harvester.results r USING (job_id) WHERE job_id = $1",
                job,
            )
            assert row["state"] == "failed"
            assert (
                row["last_error"]
                == row["error_message"]
                == ("Failed to connect to target URL: Connection timeout after 30s")
            )
    finally:
        await conn.close()


async def test_reprocess_all_fills_e164_of_old_rows_with_the_default_region(
    db_dsn: str, tmp_path: Path
) -> None:
    """Rows stored without a default region get their E.164 form from ``reprocess --all``."""
    site_id, maps_id = uuid4(), uuid4()
    site = {
        "job_id": str(site_id),
        "type": "spiderSite",
        "status": "completed",
        "data": {"url": "https://example.com", "phones": ["(617) 253-1234", "+44 20 7946 0958", "n/a"]},
    }
    maps = {
        "job_id": str(maps_id),
        "type": "spiderMaps",
        "status": "completed",
        "data": {"query": "q", "businesses": [{"place_id": "p-e164", "name": "n", "phone": "617-253-9876"}]},
    }
    path = tmp_path / "bodies.jsonl"
    path.write_text(json.dumps(site) + "\n" + json.dumps(maps) + "\n")
    assert harvester("import", str(path), dsn=db_dsn).returncode == 0
    conn = await asyncpg.connect(db_dsn)
    try:
        query = "SELECT phone, e164 FROM harvester.site_phones ORDER BY phone"
        before = [tuple(r) for r in await conn.fetch(query)]
        assert before == [("(617) 253-1234", None), ("+44 20 7946 0958", "+442079460958"), ("n/a", None)]
        proc = harvester("reprocess", "--all", dsn=db_dsn, env={"HARVESTER_NORMALIZE__DEFAULT_REGION": "US"})
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["processed"] == 2
        after = [tuple(r) for r in await conn.fetch(query)]
        assert after == [
            ("(617) 253-1234", "+16172531234"),
            ("+44 20 7946 0958", "+442079460958"),
            ("n/a", None),
        ]
        business = await one(conn, "SELECT phone, phone_e164 FROM harvester.businesses")
        assert tuple(business) == ("617-253-9876", "+16172539876")
    finally:
        await conn.close()
