"""Named SQL: every statement the code runs lives in ``sql/queries/*.sql`` under ``-- name: verb_object``.

The ``sql`` directory is found inside the installed package (the wheel ships it as ``harvester/sql``)
or, in a source checkout, at the project root.
"""

from __future__ import annotations

import inspect
import re
from functools import cache
from pathlib import Path
from typing import ClassVar

from harvester.errors import HarvesterError

NAME_RE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def sql_root() -> Path:
    package = Path(__file__).resolve().parent.parent  # harvester/
    for candidate in (package / "sql", package.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise HarvesterError("the sql/ directory was not found next to the package")


def parse(text: str, origin: str = "<sql>") -> dict[str, str]:
    """Split a file into {name: statement}. Text before the first name is a comment header."""
    found: dict[str, str] = {}
    matches = list(NAME_RE.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = match.group(1)
        if name in found:
            raise HarvesterError(f"duplicate query name {name} in {origin}")
        found[name] = body.rstrip(";").strip()
    return found


@cache
def all_queries() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted((sql_root() / "queries").glob("*.sql")):
        for name, body in parse(path.read_text(encoding="utf-8"), path.name).items():
            if name in found:
                raise HarvesterError(f"duplicate query name {name} in {path.name}")
            found[name] = body
    return found


def query(name: str) -> str:
    try:
        return all_queries()[name]
    except KeyError:
        raise HarvesterError(f"unknown query {name}") from None


class NamedQueries:
    """The statements one module runs, declared as ``name: str`` annotations and checked at import.

    A subclass lists the names it uses; creating the class looks every one of them up, so a
    missing name fails when the module is imported, not when its code path first runs. Every
    subclass is registered, so a test can find names in ``sql/queries`` that nothing declares.
    """

    registry: ClassVar[list[type[NamedQueries]]] = []

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        NamedQueries.registry.append(cls)
        for name in inspect.get_annotations(cls):
            setattr(cls, name, query(name))

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(inspect.get_annotations(cls))
