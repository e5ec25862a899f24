"""Store: the SQLite file that holds every schedule, with provenance plain SQL can follow.

One file, WAL mode, schema version kept in ``schema_info`` and migrated forward on
open. Tables are created and inspected with sqlite-utils; bulk writes go through
the connection directly so that a whole input file lands in one transaction.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import sqlite_utils

from schedb.errors import SchedbError, StorageError
from schedb.store import schema
from schedb.store.tables import Choices, Files, Models, Records, Runs, Workloads
from schedb.store.tables.base import dumps, loads, now  # noqa: F401 - re-exported by schedb.store
from schedb.tir.target import distance as target_distance

DEFAULT_DB = "schedb.db"
WRITE_CACHE_KIB = 64 * 1024  # page cache of a writing connection
# SQLite's primary result codes (Python has them as sqlite3.SQLITE_* from 3.11 only).
SQLITE_BUSY, SQLITE_READONLY, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 5, 8, 13, 14, 26
# How long a writer waits for another's transaction (an ingest holds one per input file,
# ~4 s per 10^5 records) before giving up with "database is locked".
BUSY_TIMEOUT_S = 300.0


def default_path() -> str:
    return os.environ.get("SCHEDB_DB", DEFAULT_DB)


def _no_attach(action, *_):
    return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_ATTACH else sqlite3.SQLITE_OK


class Store:
    """An open schedb database. ``Store(path)`` creates or migrates the file. Each table
    has its accessor, sqlite-utils style: ``store.records.best(wid)``,
    ``store.choices.get(wid, target)``, ``store.runs.list()``, ``store.models``, ``store.workloads``,
    ``store.files``."""

    def __init__(self, path: str | os.PathLike | None = None, readonly: bool = False):
        self.path = Path(path or default_path())
        self.readonly = readonly
        memory = str(self.path) == ":memory:"  # (benchmarks: a throwaway database)
        if readonly and not memory and not self.path.exists():
            raise SchedbError(f"{self.path}: no such database")
        if not readonly and not memory and not self.path.parent.is_dir():
            raise SchedbError(f"{self.path}: no such folder {str(self.path.parent)!r} for the database")
        try:
            conn = self._open(memory)
        except sqlite3.Error as e:
            what = "not a schedb database" if _code(e) == SQLITE_NOTADB else "cannot open database"
            raise storage_error(self.path, e) or SchedbError(f"{self.path}: {what} ({e})") from None
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self.models, self.workloads, self.records = Models(self), Workloads(self), Records(self)
        self.choices, self.files, self.runs = Choices(self), Files(self), Runs(self)
        # Candidates of every target are ranked in SQL by how alike their target is.
        conn.create_function("target_distance", 2, _target_distance, deterministic=True)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            if not readonly or self._empty:
                if not self._empty:
                    self._tune_for_writing()
                self._migrate()
            if readonly:
                conn.execute("PRAGMA query_only = ON")  # also refuses VACUUM INTO and the like
                # ... but only after SQLite has created the file it names: refuse ATTACH
                # (which VACUUM INTO does first) when the statement is prepared.
                conn.set_authorizer(_no_attach)
            if readonly and not 0 < self.version() <= schema.SCHEMA_VERSION:
                # An older file reads fine (schema 2: digests are hex text, see digest_from_v2);
                # it is migrated on the next write.
                raise SchedbError(f"{self.path}: schema version {self.version()}, this schedb reads "
                                  f"1 to {schema.SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            conn.close()
            what = "busy: another process held it too long" if _code(e) == SQLITE_BUSY else "not a schedb database"
            raise storage_error(self.path, e) or SchedbError(f"{self.path}: {what} ({e})") from None

    def _open(self, memory: bool) -> sqlite3.Connection:
        """The connection: read-write, read-only, or for a read-only file that SQLite cannot
        open read-only (WAL mode on a read-only filesystem: no -shm can be made) immutable."""
        wal = self.path.with_name(self.path.name + "-wal")
        wal_size = 0 if memory else _size(wal)
        # A new 0-byte file (made by touch or mktemp) is a new, empty database.
        self._empty = self.readonly and not memory and _size(self.path) == wal_size == 0
        if memory or self._empty:
            return _connect(":memory:")
        # A URI, percent-encoded: a "?" or "#" in the path is part of the name, not a parameter.
        uri = self.path.resolve().as_uri()
        if not self.readonly:
            return _connect(uri)
        conn = _connect(uri + "?mode=ro")
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")  # SQLite opens the file lazily
            return conn
        except sqlite3.OperationalError as e:
            conn.close()
            if not _cannot_open(e) or os.access(self.path.parent, os.W_OK):
                raise
        if wal_size:  # immutable would read the file without the changes its WAL holds
            raise SchedbError(f"{self.path}: cannot be read in this read-only folder: its {wal.name} holds "
                              "changes not yet in the file (copy both to a writable folder)")
        return _connect(uri + "?immutable=1")

    def _tune_for_writing(self):
        conn = self.conn
        # Records are ~2 KB (the trace): 16 KiB pages hold several, 4 KiB pages one.
        conn.execute("PRAGMA page_size = 16384")  # no effect once the file has tables
        # Index pages stay in memory during bulk inserts (the default 2 MiB thrashes on
        # the digest and best-record indexes beyond a few 10^4 records). Allocated lazily.
        conn.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
        self._switch_to_wal()
        conn.execute("PRAGMA synchronous = NORMAL")

    def _switch_to_wal(self):
        """WAL mode, waiting for other writers as any write does. Switching a file not yet
        in WAL mode (a new one) upgrades a read lock to a write lock, and SQLite does not
        call its busy handler for that (two such upgraders would wait on each other): so
        it is retried here until BUSY_TIMEOUT_S."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if _code(e) != SQLITE_BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    # ------------------------------------------------------------------ schema
    def version(self) -> int:
        if "schema_info" not in self.db.table_names():
            return 0
        row = self.conn.execute("SELECT value FROM schema_info WHERE key = 'version'").fetchone()
        try:
            return int(row[0]) if row else 0
        except (TypeError, ValueError):
            raise SchedbError(f"{self.path}: schema version {row[0]!r} is not a number") from None

    def _migrate(self):
        current = self.version()
        if current > schema.SCHEMA_VERSION:
            raise SchedbError(f"{self.path}: written by a newer schedb (schema {current})")
        if current == 0 and self.db.table_names() and "schema_info" not in self.db.table_names():
            raise SchedbError(f"{self.path}: an SQLite file, but not a schedb database")
        if current == schema.SCHEMA_VERSION:
            return
        # A migration that rebuilds a table drops it while rows still reference it (SQLite's
        # ALTER TABLE procedure): foreign keys off meanwhile (a no-op inside a transaction).
        self.conn.execute("PRAGMA foreign_keys = OFF")
        try:
            while True:
                with self.transaction():
                    # Read again under the write lock: another process may be migrating (or
                    # creating) this file at the same moment.
                    version = self.version()
                    if version >= schema.SCHEMA_VERSION:
                        break
                    if version == 0:
                        self.conn.execute("CREATE TABLE schema_info (key TEXT PRIMARY KEY, value TEXT)")
                    step = schema.MIGRATIONS[version]
                    if callable(step):
                        step(self.conn)
                    else:
                        for stmt in schema.statements(step):
                            self.conn.execute(stmt)
                    self.conn.execute(
                        "INSERT OR REPLACE INTO schema_info VALUES ('version', ?)", (str(version + 1),)
                    )
        finally:
            self.conn.execute("PRAGMA foreign_keys = ON")

    # ------------------------------------------------------------------ transactions
    def transaction(self):
        return _Transaction(self.conn, self.path)

    def close(self):
        self.conn.close()

    def query(self, sql: str, params=(), timeout: float | None = None) -> tuple[list[str], list[tuple]]:
        """Run one statement of the user's: (column names, rows). It is stopped after
        ``timeout`` seconds (None: never) or on Ctrl-C, with a SchedbError either way."""
        # What the user selects need not be UTF-8 (another tool's text, a cast blob): shown
        # with replacement characters. Only here: decoding in Python slows every other read.
        self.conn.text_factory = _lenient_text
        stop = _Stop(timeout)
        self.conn.set_progress_handler(stop, 10_000)  # SQLite calls it every 10k instructions
        try:
            cur = self.conn.execute(sql, params)
            return [d[0] for d in cur.description or []], cur.fetchall()
        except sqlite3.Error as e:
            # (A connection schedb opened read-only refuses writes itself: the hint below says so.)
            if not self.readonly and (mapped := storage_error(self.path, e)):
                raise mapped from None
            if stop.why:
                raise SchedbError(f"SQL stopped: {stop.why}") from None
            # The hint only for what the read-only connection refused: a write, ATTACH (authorizer).
            refused = "readonly" in str(e) or "authoriz" in str(e)
            hint = (" (the database is open read-only; `readonly=False` allows changes)"
                    if self.readonly and refused else "")
            raise SchedbError(f"SQL error: {e}{hint}") from None
        finally:
            self.conn.set_progress_handler(None, 0)
            self.conn.text_factory = str

    def check_snapshot(self) -> list[str]:
        """Begin one read snapshot (a file may be written to meanwhile) and check the file
        whole: ``["ok"]`` or SQLite's problems (a damaged file can still answer queries)."""
        self.conn.execute("BEGIN")
        return [r[0] for r in self.conn.execute("PRAGMA quick_check(5)")]

    def counts(self) -> dict:
        return {t: self.db[t].count for t in ("files", "models", "workloads", "model_tasks", "records")}


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (also KeyboardInterrupt)."""

    def __init__(self, conn, path):
        self.conn, self.path = conn, path

    def __enter__(self):
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise storage_error(self.path, e) or e from None
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.conn.execute("COMMIT")
            elif self.conn.in_transaction:  # SQLite has rolled back itself on a full disk
                self.conn.execute("ROLLBACK")
        except sqlite3.Error as e:
            if exc_type is None:
                raise storage_error(self.path, e) or e from None
            raise storage_error(self.path, exc) or exc from None  # the first error says why
        if isinstance(exc, sqlite3.Error) and (mapped := storage_error(self.path, exc)):
            raise mapped from None
        return False


class _Stop:
    """SQLite's progress handler for a user's query: non-zero (stop) once the time limit is
    past or Ctrl-C was pressed (Python runs signal handlers inside this callback)."""

    def __init__(self, timeout: float | None):
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout, self.why = timeout, None

    def __call__(self) -> int:
        try:
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.why = f"took longer than {self.timeout:g} s (`timeout`)"
        except KeyboardInterrupt:
            self.why = "interrupted"
        return 1 if self.why else 0


def storage_error(path, e: sqlite3.Error) -> StorageError | None:
    """A full disk or a read-only file as one line that says so (SQLite's own words, or the
    "cannot rollback" that followed them, do not), or None for any other error."""
    code, text = _code(e), str(e)
    if code == SQLITE_FULL or "disk is full" in text:
        return StorageError(f"{path}: the disk is full: nothing of this write was stored ({text})")
    # (A file SQLite cannot open for writing is opened read-only: its WAL then cannot be opened.)
    read_only_folder = _cannot_open(e) and not os.access(Path(path).parent, os.W_OK)
    if code == SQLITE_READONLY or "readonly database" in text or read_only_folder:
        return StorageError(f"{path}: the database or its folder is read-only: nothing can be written "
                            f"({text})")
    return None


def _code(e: sqlite3.Error) -> int | None:
    """SQLite's primary result code of an error (extended codes carry it in the low byte)."""
    code = getattr(e, "sqlite_errorcode", None)  # Python 3.11 on
    return None if code is None else code & 0xFF


def _cannot_open(e: sqlite3.Error) -> bool:
    code = _code(e)
    return code == SQLITE_CANTOPEN or (code is None and "unable to open database file" in str(e))


def _connect(uri: str) -> sqlite3.Connection:
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_S)


def _size(path: Path) -> int:
    """The file's size, 0 when there is none."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _lenient_text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _target_distance(a, b):
    return None if a is None or b is None else target_distance(a, b)
