"""The migration history check, as a pure function: which files and ledgers are one history, and what
is said about those that are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvester.db import migrate
from harvester.db.migrate import Migration, problems

DIR = Path("/migrations")


def files(*names: str) -> list[Migration]:
    """Migrations named ``names``; each file's checksum is ``sum-<name>``."""
    return [
        Migration(
            version=name,
            number=int(name[:3]),
            path=DIR / f"{name}.sql",
            checksum=f"sum-{name}",
            sql="SELECT 1;",
        )
        for name in names
    ]


FULL = (*(f"{n:03d}_x{n}" for n in range(1, 12)), "013_m", "014_n", "015_o")


def applied(*names: str, checksums: bool = True) -> dict[str, str | None]:
    return {name: (f"sum-{name}" if checksums else None) for name in names}


def test_the_files_of_main_are_one_history_with_the_012_hole() -> None:
    assert problems(files(*FULL), {}) == []
    assert problems(files(*FULL), applied(*FULL[:13])) == []
    assert problems(files(*FULL), applied(*FULL)) == []


def test_the_real_files_are_one_history() -> None:
    real = migrate.available()
    assert [m.number for m in real] == [n for n in range(1, len(real) + 2) if n != 12]
    assert problems(real, {}) == []


def test_a_new_gap_is_refused_even_with_nothing_applied() -> None:
    found = problems(files(*FULL, "017_q"), {})
    assert found == [
        "no migration numbered 016 (between 015_o.sql and 017_q.sql): migrations are numbered "
        "without gaps (the only recorded hole is 012)"
    ]


def test_a_run_of_missing_numbers_is_one_problem() -> None:
    names = [n for n in FULL if n[:3] not in ("003", "004", "005")]
    assert problems(files(*names), {}) == [
        "no migration numbered 003 to 005 (between 002_x2.sql and 006_x6.sql): migrations are "
        "numbered without gaps (the only recorded hole is 012)"
    ]


def test_a_missing_first_migration_is_a_gap() -> None:
    assert problems(files(*FULL[1:]), {})[0].startswith("no migration numbered 001 (before 002_x2.sql)")


def test_a_file_in_the_recorded_hole_is_refused_on_an_old_database_and_a_new_one() -> None:
    late = files(*FULL, "012_late")
    for ledger in ({}, applied(*FULL)):
        found = problems(late, ledger)
        assert len(found) == 1
        assert found[0].startswith("012_late.sql takes 012, a recorded hole")


def test_a_file_below_the_newest_applied_one_is_refused() -> None:
    ledger = applied(*FULL, "017_q")
    found = problems(files(*FULL, "016_p", "017_q"), ledger)
    assert found == [
        "016_p.sql is not applied but the later 017_q is: it would run out of order (after 017_q "
        "here, before it on a new database); give it the next number after the newest migration"
    ]


def test_pending_files_after_the_newest_applied_one_are_fine() -> None:
    assert problems(files(*FULL, "016_p", "017_q"), applied(*FULL)) == []


def test_an_applied_file_that_changed_is_refused() -> None:
    ledger = applied(*FULL) | {"010_x10": "0123456789abcdef"}
    assert problems(files(*FULL), ledger) == [
        "010_x10.sql changed after it was applied (sha256 0123456789ab then, sum-010_x10 now): "
        "a migration on main is never edited; a change is a new migration (restore the file as it "
        "was applied)"
    ]


def test_a_ledger_without_checksums_matches_any_text() -> None:
    assert problems(files(*FULL), applied(*FULL, checksums=False)) == []


def test_an_applied_file_that_is_gone_is_refused() -> None:
    kept = [n for n in FULL if n != "007_x7"]
    found = problems(files(*kept, "007_renamed"), applied(*FULL))
    assert found == [
        "007_x7 is applied but its file 007_x7.sql is gone: a migration on main is never removed or renamed",
        "007_renamed.sql is not applied but the later 015_o is: it would run out of order (after "
        "015_o here, before it on a new database); give it the next number after the newest migration",
    ]


def test_versions_of_a_newer_release_are_left_alone() -> None:
    """An upgrade migrates while older daemons run: they must keep starting."""
    assert problems(files(*FULL), applied(*FULL, "016_p", "017_q")) == []


def test_two_files_with_one_number_are_refused() -> None:
    found = problems(files(*FULL, "015_other"), {})
    assert found == ["015_o.sql and 015_other.sql have the same number 015"]


@pytest.mark.parametrize("name", ["16_short", "016_Upper", "016-dash"])
def test_a_file_named_otherwise_is_refused(name: str) -> None:
    odd = Migration(version=name, number=16, path=DIR / f"{name}.sql", checksum="c", sql="")
    assert problems([*files(*FULL), odd], {}) == [
        f"{name}.sql is not named NNN_name.sql (three digits, lower case)"
    ]


def test_every_problem_is_named_in_order_of_number() -> None:
    ledger = applied(*FULL) | {"002_x2": "edited"}
    found = problems(files(*[n for n in FULL if n != "009_x9"], "016_p", "018_r"), ledger)
    # 002 changed, 009 gone (not also a gap), 017 missing between 016 and 018
    assert [text.split(" ", 1)[0] for text in found] == ["002_x2.sql", "009_x9", "no"]
    assert "017" in found[2]
