"""Another schedb database merged into the store: workloads by signature, records by
digest, every record checked as a log line is (the file may be damaged or forged)."""

from __future__ import annotations

from schedb.errors import SchedbError
from schedb.store import Store, loads
from schedb.store.merge import merge
from schedb.ingest.checks import check_run_secs, check_trace, parse_json
from schedb.ingest.lines import LINE_ERRORS, Report, Skip
from schedb.ingest.metaschedule import NOT_APPLYING
from schedb.ingest.sandbox import misplaced
from schedb.ingest.source import Source, register_file


class SchedbFile(Source):
    """Merge another schedb database: workloads by signature, records by digest."""

    def __call__(self, store: Store, report: Report, model: str | None):
        if self.path.resolve() == store.path.resolve():
            raise SchedbError(f"{self.path}: is the database being written to")
        other = Store(self.path, readonly=True)
        try:
            # A database open elsewhere keeps committed rows in its WAL: part of its content.
            wal = self.path.with_name(self.path.name + "-wal")
            file_id = register_file(store, [self.path] + [wal] * wal.is_file(), "schedb", report)
            if file_id is None:
                return
            problems = other.check_snapshot()
            if problems != ["ok"]:
                raise SchedbError(f"{self.path}: damaged database, nothing merged ({'; '.join(problems)})")
            merged = merge(store, other, check=_check_merged)
            skipped = merged.pop("skipped")
            for what, why in skipped:
                report.skip(self.path, what, why)
            _replay_check(store, merged.pop("traces"), self.path, report)
            store.files.set_lines(file_id, None if skipped else other.records.count())
            for key, n in merged.items():
                setattr(report, key, getattr(report, key) + n)
        finally:
            other.close()


def _replay_check(store: Store, traces: dict, path, report: Report):
    """Each merged workload's first valid traces applied to it (sandbox.misplaced): where
    none applies, the records merged for it were tuned for another workload, and are
    stored invalid with the reason."""
    lines = {wid: (store.workloads.get(wid)["ms_workload"], first) for wid, (_, first) in traces.items()}
    for wid, why in misplaced(lines).items():
        n = store.records.mark_invalid(traces[wid][0], f"{NOT_APPLYING}: {why}")
        report.invalid += n
        report.warnings.append(f"{path}: {n} records of workload {wid} stored invalid: their traces do not "
                               f"apply to it ({why})")


def _check_merged(r: dict):
    """A record row of another schedb file, checked as a log line is (its file may be
    damaged or forged): valid and mean_s are recomputed from its samples. Raises ValueError."""
    try:
        if not all(isinstance(r[k], str) for k in ("target", "trace", "format")):
            raise Skip("target, trace or format is not text")
        samples, mean, valid = check_run_secs(loads(r["run_secs"]) if r["run_secs"] is not None else None)
        empty = False
        if r["format"] == "ms-trace":
            text = r["trace"].encode()
            check_trace(trace := parse_json(text, "trace is not JSON"), text)
            empty = len(trace[0]) == 0  # schedules nothing: every TIR workload has blocks to schedule
        elif not isinstance(loads(r["trace"]), list):
            raise Skip("trace is not a list")
    except Skip as e:
        raise ValueError(str(e)) from None
    except LINE_ERRORS as e:
        raise ValueError(f"malformed ({type(e).__name__})") from None
    why = "empty trace: it schedules none of the workload's blocks" if valid and empty else None
    valid = valid and r["valid"] == 1 and not empty  # a record its own file calls invalid stays invalid
    r.update(valid=int(valid), mean_s=mean if valid else None,
             error=None if valid else (why or r["error"] or "failed measurement"))
