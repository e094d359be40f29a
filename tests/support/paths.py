"""Where things are, for every test whatever its folder: the project, its parts and the fixtures."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
PACKAGE = ROOT / "harvester"
DEPLOY = ROOT / "deploy"
DOCS = ROOT / "docs"
FIXTURES = TESTS / "fixtures"
SEED = FIXTURES / "seed"
BODIES = FIXTURES / "bodies"
