"""The ``files`` table: every input file, by content hash."""

from __future__ import annotations

import os

from schedb.store.tables.base import Table, now


def stored_path(path: str) -> str | bytes:
    """A path as the files table keeps it: text, or the bytes the OS gave when the name is
    not UTF-8 (SQLite text cannot hold them; schedb.errors.printable shows them)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


class Files(Table):
    def add(self, path: str, sha256: str, fmt: str, size: int) -> int | None:
        """The row of an input file; None when this exact content was read whole before. A
        file read before with lines it could not store (``lines`` NULL: see :meth:`set_lines`)
        is read again, under its old row, so that what a later schedb can read is not lost."""
        row = self.conn.execute("SELECT id, lines FROM files WHERE sha256 = ?", (sha256,)).fetchone()
        if row is not None:
            return None if row[1] is not None else row[0]
        return self.conn.execute(
            "INSERT INTO files (path, sha256, format, size, ingested_at) VALUES (?, ?, ?, ?, ?)",
            (stored_path(path), sha256, fmt, size, now())).lastrowid

    def read_whole(self, sha256: str) -> bool:
        """Whether this exact content was read whole before (``add`` would return None)."""
        row = self.conn.execute("SELECT lines FROM files WHERE sha256 = ?", (sha256,)).fetchone()
        return row is not None and row[0] is not None

    def set_lines(self, file_id: int, lines: int | None):
        """How many lines (records, for a database) the file had, all of them stored; None
        when some could not be, so that the next ingest of it reads it again."""
        self.conn.execute("UPDATE files SET lines = ? WHERE id = ?", (lines, file_id))

    def copy(self, f: dict) -> int:
        """Another database's file row here (the existing one for the same content): its id."""
        row = self.conn.execute("SELECT id FROM files WHERE sha256 = ?", (f["sha256"],)).fetchone()
        if row:
            return row[0]
        return self.conn.execute(
            "INSERT INTO files (path, sha256, format, size, lines, ingested_at) VALUES (?, ?, ?, ?, ?, ?)",
            (f["path"], f["sha256"], f["format"], f["size"], f["lines"], f["ingested_at"])).lastrowid

    def rows(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM files"))
