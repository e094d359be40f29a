"""The commands reach PostgreSQL through ``harvester.db`` only: no module of the package imports
the database driver, so the driver's errors and handles are named in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import harvester.commands

COMMANDS = sorted(Path(harvester.commands.__file__).parent.glob("*.py"))


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.name)
def test_no_command_module_imports_the_database_driver(path: Path) -> None:
    assert "asyncpg" not in imported(path)


def test_every_command_module_is_checked() -> None:
    assert {"cli.py", "jobs.py", "read.py", "run.py", "output.py", "export.py"} <= {p.name for p in COMMANDS}
