"""schedb: a schedule database for Apache TVM.

Pipeline stages, one module each: models -> tasks -> signature -> store/ingest ->
index -> transfer (replay, measure, droplet) -> compile. ``schedb.Database`` is the
store as a MetaSchedule database.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: importing TVM costs seconds, and `schedb sql` / `schedb show` never need it.
    if name == "Database":
        from schedb.database import Database

        return Database
    raise AttributeError(f"module 'schedb' has no attribute {name!r}")
