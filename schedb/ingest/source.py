"""An input of ingest: one log, work dir or schedb file, ingested in one transaction,
and its row in ``files`` (by content hash: the same content is ingested once)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from schedb.store import Store
from schedb.ingest.lines import Report


class Source:
    """An input: ``path`` names it in the report; calling it ingests it."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, store: Store, report: Report, model: str | None):
        raise NotImplementedError

    def prepare(self, store: Store) -> None:
        """Start, in a child, what needs no writing while the input before this one is
        ingested (ingest.walk calls it): the two overlap on two cores. By default nothing."""

    def close(self) -> None:
        """Stop what ``prepare`` started, when this input is never ingested."""


def register_file(store: Store, paths: list[Path], fmt: str, report: Report, sha256: str | None = None) -> int | None:
    """Add the file row; None when this exact content was ingested before. ``sha256``: the
    files' digest (sha256_files), when already known."""
    file_id = store.files.add(str(paths[0].resolve()), sha256 or sha256_files(*paths), fmt,
                             sum(p.stat().st_size for p in paths))
    if file_id is None:
        report.already += 1
    else:
        report.files += 1
    return file_id


def sha256_files(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
