"""The top level of ingest: the inputs named (files, folders walked recursively), each
recognised by its content and ingested in a transaction of its own, so a bad input is an
error for it alone."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable, Iterator

from schedb.errors import SchedbError, StorageError
from schedb.store import Store, default_path
from schedb.ingest.ansor import CLASS_MAP, AnsorLog, looks_like_ansor
from schedb.ingest.lines import Report
from schedb.ingest.merge import SchedbFile
from schedb.ingest.metaschedule import WorkDir
from schedb.ingest.source import Source
from schedb.ingest.workdir import RECORDS, SIDECAR, WORKLOADS, is_workdir

_SIDE_FILES = {CLASS_MAP, "tuning_info.json", SIDECAR}
_LOG_SUFFIXES = (".json", ".jsonl", ".log", ".json.gz", ".jsonl.gz", ".db", ".sqlite")


def ingest(store: Store, paths, model: str | None = None,
           on_file: Callable[[str, Report], None] | None = None) -> Report:
    """Ingest every tuning log under ``paths`` (files or folders, recursively)."""
    report = Report()
    found, upcoming = 0, _discover([Path(p) for p in paths], report, store.path)
    following = next(upcoming, None)
    try:
        while following is not None:
            source, following = following, next(upcoming, None)
            found += 1
            if following is not None:
                following.prepare(store)  # its workloads decode on the other core meanwhile
            stop = _ingest_one(store, source, report, model)
            if on_file:
                on_file(str(source.path), report)
            if stop:
                break
    finally:
        if following is not None:  # never reached: what it started is stopped
            following.close()
    if not found and not report.errors:
        report.errors.append(f"{', '.join(map(str, paths))}: no tuning logs found (MetaSchedule work dirs, "
                             "Ansor JSON lines or schedb databases)")
    return report


# What an input adds to the report: undone when its transaction rolls back.
_COUNTERS = ("files", "already", "new_workloads", "new_records", "duplicates", "invalid", "invalid_ansor", "choices")


def _ingest_one(store: Store, source: Source, report: Report, model: str | None) -> bool:
    """``source`` ingested in a transaction of its own; True when no further input can be
    stored (a full disk or a read-only file)."""
    before = [getattr(report, c) for c in _COUNTERS]
    n_errors, stop = len(report.errors), False
    try:
        with store.transaction():
            source(store, report, model)
    except StorageError as e:  # a full disk or a read-only file: every further input would fail alike
        report.errors.append(f"{source.path}: not stored: {e}")
        stop = True
    except SchedbError as e:
        report.errors.append(str(e))
    except sqlite3.DatabaseError as e:
        report.errors.append(f"{source.path}: database error: {e}")
    except Exception as e:  # an input nobody foresaw: still an error for this file only
        report.errors.append(f"{source.path}: cannot ingest ({type(e).__name__}: {e})")
    if len(report.errors) != n_errors:
        # The transaction rolled back: what this file seemed to add is not there.
        for c, v in zip(_COUNTERS, before):
            setattr(report, c, v)
    report.end_source()
    return stop


def ingest_into(db_path, paths, model: str | None = None,
                on_file: Callable[[str, Report], None] | None = None) -> tuple[Report, Path]:
    """``ingest`` into the database at ``db_path`` (default: $SCHEDB_DB or ./schedb.db),
    created if need be: (report, database path). A database this call created is removed
    again when every input was rejected, so a failed ingest leaves no file behind."""
    path = Path(db_path or default_path())
    created = not path.exists()
    store = Store(path)
    try:
        report = ingest(store, paths, model=model, on_file=on_file)
    finally:
        store.close()
    if created and report.rejected and report.files == 0:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            p.unlink(missing_ok=True)
    return report, path


def _discover(paths: list[Path], report: Report, own: Path) -> Iterator[Source]:
    seen: set[tuple[int, int]] = set()  # real directories walked: symlink loops end here
    own = own.resolve()  # the database written to: passed over where a folder walk meets it
    for path in paths:
        if not path.exists():
            report.errors.append(f"{path}: no such file or directory")
        elif path.is_dir():
            yield from _walk(path, seen, own)
        elif not path.is_file():
            report.errors.append(f"{path}: not a regular file (a FIFO, socket or device is never read)")
        elif path.resolve() in (own.with_name(own.name + "-wal"), own.with_name(own.name + "-shm")):
            report.errors.append(f"{path}: is a part (-wal / -shm) of the database being written to")
        else:
            source = _classify(path, explicit=True)
            if isinstance(source, str):
                report.errors.append(source)
            elif source is not None:
                yield source


def _walk(folder: Path, seen: set, own: Path) -> Iterator[Source]:
    try:
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        if is_workdir(folder):
            yield WorkDir(folder)
            return  # its logs/ and sidecar belong to it
        children = sorted(folder.iterdir())
    except OSError as e:
        yield _Failing(folder, f"{folder}: cannot read folder ({e.strerror})")
        return
    for child in children:
        if child.is_dir():
            yield from _walk(child, seen, own)
        elif child.name.endswith(_LOG_SUFFIXES) and child.name not in _SIDE_FILES and child.resolve() != own:
            if not child.is_file():  # a FIFO, socket or device: reading it could block forever
                yield _Passed(child, "not a regular file")
                continue
            source = _classify(child, explicit=False)
            if isinstance(source, str):
                yield _Failing(child, source)
            elif source is not None:
                yield source


def _classify(path: Path, explicit: bool):
    """A source for ``path``, None to pass over it, or an error message."""
    if path.name in (WORKLOADS, RECORDS, WORKLOADS + ".gz", RECORDS + ".gz"):
        return WorkDir(path.parent) if is_workdir(path.parent) else (
            f"{path}: half a MetaSchedule work dir (needs {WORKLOADS} and {RECORDS})")
    if path.name in _SIDE_FILES and not explicit:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"{path}: cannot read ({e.strerror})"
    if head.startswith(b"SQLite format 3"):
        return SchedbFile(path)
    if looks_like_ansor(path):
        return AnsorLog(path)
    if path.name in _SIDE_FILES:
        return None
    return f"{path}:1: not a tuning log (expected a MetaSchedule work dir, Ansor JSON lines or a schedb database)"


class _Passed(Source):
    """A file met during a folder walk that is not read: a warning naming it."""

    def __init__(self, path: Path, why: str):
        super().__init__(path)
        self.why = why

    def __call__(self, store, report, model):
        report.warnings.append(f"{self.path}: skipped: {self.why}")


class _Failing(Source):
    """A file met during a folder walk that is not a tuning log: an error for it alone."""

    def __init__(self, path: Path, message: str):
        super().__init__(path)
        self.message = message

    def __call__(self, store, report, model):
        raise SchedbError(self.message)
