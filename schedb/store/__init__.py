"""The storage layer: every SQL statement of schedb lives in this package.

``Store`` (store.py) is the SQLite file: connection, transactions, migrations (schema.py)
and the user's SQL; tables/ holds one accessor per table (``store.records``,
``store.workloads``, ``store.models``, ``store.choices``, ``store.files``, ``store.runs``); merge.py copies
another database in; records.py says what a record is (identity, validity, commit);
database.py is the MetaSchedule ``Database`` adapter (imported from there: it needs TVM,
the rest does not).
"""

from schedb.store.schema import SCHEMA_VERSION, digest_from_v2
from schedb.store.store import DEFAULT_DB, Store, default_path, dumps, loads, now

__all__ = ["DEFAULT_DB", "SCHEMA_VERSION", "Store", "default_path", "digest_from_v2", "dumps", "loads", "now"]
