"""Persistence: everything harvester keeps in PostgreSQL, and the only package that speaks to it.

``pool`` opens connections and turns driver errors into ``DatabaseError``; the other modules each
own a part of the schema (``queue`` the jobs' leases, ``store`` the results, ``rows`` the output
tables, ``feed`` the change feed, ``limiter`` the shared rate limit, ``migrate`` the schema itself)
and run the named statements of ``sql/queries``. The rest of harvester reaches PostgreSQL through
what this package exports and the Protocols of ``harvester.ports``, never through the driver.
"""

from harvester.db.pool import (
    CONNECT_ERRORS,
    DB_ERRORS,
    DB_OR_SQL_ERRORS,
    NODE_LOST_STATES,
    RECOVERY_CONFLICT_HINT,
    REFUSED,
    Connection,
    Pool,
    connection,
    describe_dsn,
    describe_node,
    guard,
    leave_node,
    node_lost,
    open_pool,
    read_only,
    recovery_conflict,
    transaction,
    tune_connection,
    tune_socket,
)

__all__ = [
    "CONNECT_ERRORS",
    "DB_ERRORS",
    "DB_OR_SQL_ERRORS",
    "NODE_LOST_STATES",
    "RECOVERY_CONFLICT_HINT",
    "REFUSED",
    "Connection",
    "Pool",
    "connection",
    "describe_dsn",
    "describe_node",
    "guard",
    "leave_node",
    "node_lost",
    "open_pool",
    "read_only",
    "recovery_conflict",
    "transaction",
    "tune_connection",
    "tune_socket",
]
