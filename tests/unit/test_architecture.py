"""The shape of the package, checked as a test so that CI holds it: the import contracts of
``pyproject.toml`` (import-linter), modules a reader can hold in one sitting, and the database
driver behind one package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT

PACKAGE = ROOT / "harvester"
MAX_LINES = 400


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_import_contracts_hold() -> None:
    """pure packages do no I/O, only harvester.db imports the driver, the simulator stands apart,
    no cycles between packages or modules; the output names the broken import chain."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(  # noqa: S603 - the venv's own linter, fixed arguments
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_only_the_db_package_names_the_driver() -> None:
    """Not even in a docstring: the rest of harvester speaks of PostgreSQL, not of asyncpg."""
    naming = [
        str(p.relative_to(ROOT))
        for p in modules()
        if re.search(r"\basyncpg\b", p.read_text()) and PACKAGE / "db" not in p.parents
    ]
    assert naming == []


def test_every_package_says_what_it_owns() -> None:
    silent = [
        str(init.relative_to(ROOT))
        for init in PACKAGE.rglob("__init__.py")
        if not init.read_text().lstrip().startswith('"""')
    ]
    assert silent == []
