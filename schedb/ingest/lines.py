"""A log read line by line: the ``Report`` of an ingest, the lines of a (gzipped) file,
and the loop that turns them into record rows, a bad line skipped with ``file:line``."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from schedb.store import Store, now
from schedb.ingest.workdir import open_binary

CHUNK = 5000  # rows per insert (one executemany): a large log is never held in memory whole
MAX_LINE = 32 << 20  # bytes; real lines are < 1 MB (a workload), a longer one is not read into memory
WARNINGS_PER_FILE = 20  # a file of junk names its first bad lines, then counts the rest
BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark some editors put at the start of a file
# What parsing a damaged line can raise (database errors are not among them: they end the file).
LINE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, OverflowError)


@dataclass
class Report:
    files: int = 0
    already: int = 0  # files whose exact content was ingested before
    new_workloads: int = 0
    new_records: int = 0
    duplicates: int = 0
    invalid: int = 0  # failed measurements, stored but never chosen
    invalid_ansor: int = 0  # of which Ansor's error records (error_no != 0: a build or run failed)
    choices: int = 0  # standing choices (schedb.pipeline.choose) merged from other schedb files
    skipped_lines: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    _per_file: dict = field(default_factory=dict, repr=False)

    def skip(self, path, lineno: int | str, why: str):
        """A bad line: counted; named in a warning for the first WARNINGS_PER_FILE of a file."""
        self.skipped_lines += 1
        n = self._per_file[path] = self._per_file.get(path, 0) + 1
        if n <= WARNINGS_PER_FILE:
            self.warnings.append(f"{path}:{lineno}: skipped: {why}")

    def absorb(self, ahead: "Report"):
        """What a read done ahead of its input's turn (Source.prepare) reported, as if now."""
        self.skipped_lines += ahead.skipped_lines
        self.warnings += ahead.warnings
        for path, n in ahead._per_file.items():
            self._per_file[path] = self._per_file.get(path, 0) + n

    def end_source(self):
        for path, n in self._per_file.items():
            if n > WARNINGS_PER_FILE:
                self.warnings.append(f"{path}: {n - WARNINGS_PER_FILE} more bad lines skipped")
        self._per_file.clear()

    @property
    def rejected(self) -> bool:
        return bool(self.errors) or self.skipped_lines > 0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "files", "already", "new_workloads", "new_records", "duplicates", "invalid", "invalid_ansor", "choices",
            "skipped_lines", "errors", "warnings")}


class Skip(Exception):
    """A bad line: skipped with a warning, the file goes on."""


def read_lines(path: Path, report: Report) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a (possibly gzip-compressed) file as bytes, numbered from 1.
    A line over MAX_LINE is skipped without being held in memory; parsers validate UTF-8."""
    lineno = 0
    try:
        with open_binary(path) as f:
            while raw := f.readline(MAX_LINE + 1):
                lineno += 1
                if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                    while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                        pass
                    report.skip(path, lineno, f"line longer than {MAX_LINE >> 20} MiB")
                elif not raw.isspace():
                    yield lineno, raw.removeprefix(BOM) if lineno == 1 else raw
    except (OSError, EOFError, zlib.error) as e:
        # A truncated .gz ends in EOFError, a damaged one in zlib.error (gunzip.py: every line
        # before the damage has been read): keep what came before, warn.
        why = "damaged compressed data" if isinstance(e, (EOFError, zlib.error)) else "read error"
        report.warnings.append(f"{path}:{lineno + 1}: read stopped early, the lines before kept: {why} ({e})")
        report.skipped_lines += 1


def ingest_lines(store: Store, path: Path, file_id: int, report: Report, parse, skipped: int | None = None):
    """Parse every line of ``path`` into a record row (``parse(line, lineno, created_at)``
    -> a tuple in Records.COLUMNS order), insert them in chunks. The file counts as read
    whole (``files.lines`` set) only if no line was skipped since ``report.skipped_lines``
    was ``skipped`` (default: now; a work dir passes its count before its workloads)."""
    rows, last = [], 0
    skipped = report.skipped_lines if skipped is None else skipped
    append, stamp = rows.append, now()
    for lineno, line in read_lines(path, report):
        last = lineno
        try:
            append(parse(line, lineno, stamp))
        except Skip as e:
            report.skip(path, lineno, str(e))
        except LINE_ERRORS as e:  # a shape no check foresaw: still this line's fault only
            report.skip(path, lineno, f"malformed ({type(e).__name__}: {str(e)[:120]})")
        if len(rows) >= CHUNK:
            _flush(store, rows, report)
            stamp = now()
    _flush(store, rows, report)
    store.files.set_lines(file_id, last if report.skipped_lines == skipped else None)


def _flush(store: Store, rows: list, report: Report):
    new = store.records.insert(rows)
    report.new_records += new
    report.duplicates += len(rows) - new
    rows.clear()
