"""What every table accessor shares: the store's connection, and JSON for stored text."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import orjson


def dumps(obj, sort_keys: bool = False) -> str:
    """The one JSON serializer for stored text (digests depend on it): compact, orjson
    (several times faster than json, which dominated ingest time)."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS if sort_keys else 0).decode()


def loads(text):
    """orjson, falling back to json for what only Python's json writes (NaN, Infinity)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def as_json(value):
    """Stored JSON text of a value that may already be text."""
    return None if value is None else (value if isinstance(value, str) else json.dumps(value))


class Table:
    def __init__(self, store):
        self.store = store

    @property
    def conn(self):
        return self.store.conn

    @property
    def db(self):
        return self.store.db

    def one(self, sql: str, args) -> dict | None:
        rows = list(self.db.query(sql, args))
        return rows[0] if rows else None
