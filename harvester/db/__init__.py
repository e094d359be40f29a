"""Persistence: everything harvester keeps in PostgreSQL, and the only package that speaks to it.

``pool`` opens connections and turns driver errors into ``DatabaseError``; ``seam`` runs one call in
one transaction. Each other module owns a part of the schema: ``jobs`` the jobs' leases (the
``JobStore`` of ``harvester.ports``), ``listings`` what the job list and the event stream say about
them, ``admin`` enqueueing and the counts commands read, ``store`` one result body to rows through
``rows``, ``bulk`` import and reprocess, ``feed`` the change feed, ``limiter`` the shared rate limit,
``migrate`` the schema itself. SQL lives in ``sql/queries`` (``queries``). The rest of harvester
reaches PostgreSQL through this package and the Protocols of ``harvester.ports``, never the driver.
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
