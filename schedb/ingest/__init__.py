"""Ingest: tuning logs of any kind into the store, each input file in one transaction.

Sources (recognised by content, not by name):
  * MetaSchedule work dirs: ``database_workload.json`` + ``database_tuning_record.json``
    (also ``.gz``), with the ``schedb.json`` sidecar that ``schedb tune`` writes
    (metaschedule.py; the files themselves, and export, in workdir.py);
  * legacy Ansor logs (JSON lines with ``i``, ``r``, ``v``), with ``wkl_classes.json``
    beside them naming kernel classes (ansor.py);
  * other schedb databases (merge.py).

walk.py finds the inputs and ingests each (``ingest``, ``ingest_into``); source.py is
what an input is and its row in ``files``; lines.py reads a log line by line into a
``Report``; checks.py is what every record passes, whatever its format; sandbox.py
decodes workloads in a memory-capped child process.

Bad lines are skipped with a warning naming file:line; a file that is not a tuning
log is an error for that file only. Nothing from a log is ever unpickled or eval'd:
lines are parsed as JSON, workloads by TVM's JSON loader.
"""

# The names imported from schedb.ingest itself (CLI, schedb.IngestReport, tests, benchmarks).
from schedb.ingest.checks import TargetCache
from schedb.ingest.lines import Report, read_lines
from schedb.ingest.metaschedule import MsRecordParser
from schedb.ingest.walk import ingest, ingest_into

__all__ = ["MsRecordParser", "Report", "TargetCache", "ingest", "ingest_into", "read_lines"]
