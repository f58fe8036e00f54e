"""Durable SQLite for the embedded stores (identity, keyring, ledger, audit).

WAL with synchronous=FULL makes a committed write durable across power loss.
gRPC servers call from a thread pool, so :class:`Database` shares one
connection behind a lock and runs every write in an explicit transaction.
Database files (and their -wal/-shm companions) are 0600 in 0700 directories.
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace

from carechain.core.files import private_file, restrict_existing
from carechain.runtime.metrics import backend_call, count_backend_error


class TracedConnection(sqlite3.Connection):
    """A connection whose statements are client spans ("sqlite INSERT") inside a traced call; failures counted.

    Only statements run under a recording span (an RPC) get one, so background loops pay nothing.
    The span name is the statement's verb: SQL text and parameters (identifiers) never reach a span.
    """

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        if not trace.get_current_span().is_recording():
            return _counted(super().execute, sql, parameters)
        with backend_call("sqlite", _verb(sql)):
            return _counted(super().execute, sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        if not trace.get_current_span().is_recording():
            return _counted(super().executemany, sql, parameters)
        with backend_call("sqlite", _verb(sql) + " many"):
            return _counted(super().executemany, sql, parameters)


def _verb(sql: str) -> str:
    """The first keyword of a statement (SELECT, INSERT, BEGIN, PRAGMA, ...)."""
    words = sql.split(None, 1)
    return words[0].upper() if words else "?"


def _counted(call: Any, *args: Any) -> Any:
    """Run a statement; a database failure other than a constraint (a domain answer) counts as a backend error."""
    try:
        return call(*args)
    except sqlite3.IntegrityError:
        raise
    except sqlite3.Error:
        count_backend_error("sqlite")
        raise


def connect_durable(path: pathlib.Path) -> sqlite3.Connection:
    """Open (creating) a SQLite file for writing: WAL, synchronous=FULL, foreign keys, autocommit mode.

    The file is created 0600 in a 0700 directory before SQLite opens it (SQLite gives
    the -wal and -shm files the database file's mode; they are re-checked anyway).
    """
    private_file(path)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, factory=TracedConnection)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    restrict_existing(path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
    return conn


class Database:
    """One SQLite file, one connection, serialised access."""

    def __init__(self, path: pathlib.Path, schema: str, *, secure_delete: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn = connect_durable(path)
        self._conn.row_factory = sqlite3.Row
        if secure_delete:
            # Deleted rows are overwritten with zeros instead of lingering in free pages.
            self._conn.execute("PRAGMA secure_delete=ON")
        with self.transaction() as conn:
            for statement in _statements(schema):
                conn.execute(statement)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run statements atomically (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """Rows of a read-only query."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def checkpoint(self) -> None:
        """Move the WAL into the database file and truncate the WAL to zero bytes."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def _statements(schema: str) -> list[str]:
    # executescript() would COMMIT our open transaction; run statements one by one instead.
    return [s.strip() for s in schema.split(";") if s.strip()]
