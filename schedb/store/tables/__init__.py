"""One accessor per table, sqlite-utils style: ``store.records.best(...)``,
``store.choices.get(...)``. Each holds its table's SQL; ``Store`` owns the connection."""

from schedb.store.tables.choices import Choices
from schedb.store.tables.files import Files
from schedb.store.tables.models import Models
from schedb.store.tables.records import Records
from schedb.store.tables.runs import Run, Runs, RunTask
from schedb.store.tables.workloads import Workloads

__all__ = ["Choices", "Files", "Models", "Records", "Run", "RunTask", "Runs", "Workloads"]
