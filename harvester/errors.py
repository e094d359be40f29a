"""The project's exception hierarchy: one root, a few kinds that callers branch on."""

from __future__ import annotations


class HarvesterError(Exception):
    """Root of every error harvester raises on purpose."""


class ConfigError(HarvesterError):
    """A configuration key is missing, unknown or has a bad value. The message names the key."""


class UsageError(HarvesterError):
    """A command was called with bad arguments or input (exit code 2)."""


class DatabaseError(HarvesterError):
    """The database could not be reached or refused a statement."""


class BodyError(HarvesterError):
    """A result body could not be parsed or normalized; the raw bytes are kept as a reject."""


class ApiError(HarvesterError):
    """The SpiderIQ API could not be used as expected."""


class SchemaError(HarvesterError):
    """The database schema is missing or behind this version: `harvester migrate` fixes it."""


class MigrationHistoryError(SchemaError):
    """The migration files and the database's ledger disagree about the past: an applied migration
    was edited, or a file appeared out of order. No command fixes it; a person must (exit code 2)."""
