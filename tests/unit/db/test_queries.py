"""Named SQL: every statement in ``sql/queries`` is declared by the module that runs it, and back.

A declared name that is missing fails at import (``NamedQueries``); this test fails on a name in
the files that no module declares (dead SQL).
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import harvester
from harvester.db import queries
from harvester.errors import HarvesterError


def declared() -> set[str]:
    for module in pkgutil.walk_packages(harvester.__path__, "harvester."):
        importlib.import_module(module.name)
    return {name for cls in queries.NamedQueries.registry for name in cls.names()}


def test_every_named_query_is_declared_by_a_module() -> None:
    assert set(queries.all_queries()) - declared() == set()


def test_every_declared_name_is_a_query() -> None:
    assert declared() - set(queries.all_queries()) == set()


def test_a_missing_name_fails_when_the_class_is_made() -> None:
    with pytest.raises(HarvesterError, match="unknown query no_such_statement"):
        type("Broken", (queries.NamedQueries,), {"__annotations__": {"no_such_statement": "str"}})
    queries.NamedQueries.registry[:] = [c for c in queries.NamedQueries.registry if c.__name__ != "Broken"]
