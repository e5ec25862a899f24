"""MetaSchedule work dirs into the store: the workloads (decoded in the sandbox), the
model and its tasks from the ``schedb.json`` sidecar, and every tuning record line."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import orjson
from simdjson import Array, Object

from schedb.errors import SchedbError, printable
from schedb.store import Store
from schedb.store.records import commit_workload, digest_of_text
from schedb.ingest.checks import TargetCache, check_run_secs, check_trace, parse_json, trace_misfit
from schedb.ingest.lines import Report, Skip, ingest_lines, read_lines
from schedb.ingest.sandbox import Sandboxed, decode, load_workloads, misplaced, replay_payload, trace_applies
from schedb.ingest.source import Source, register_file, sha256_files
from schedb.ingest.workdir import RECORDS, SIDECAR, WORKLOADS, find, read_sidecar

_dumps = orjson.dumps
SAMPLES = 2  # valid traces per workload tried before its line is judged misplaced
NOT_APPLYING = "trace does not apply to its workload"
HEAD_START_LINES = 1000  # record lines read ahead for each workload's first trace
FITS_MAX = 4096  # (workload, instruction list) pairs whose fit is remembered


class WorkDir(Source):
    """A MetaSchedule work dir; its row in ``files`` and its errors name the records file."""

    def __init__(self, folder: Path):
        super().__init__(find(folder, RECORDS))
        self.folder = folder
        self.ahead = None  # (sha256 of its files, the decoding's report, the decoding) from prepare

    def prepare(self, store: Store):
        """The files' digest, and unless that content was read whole before, the workload
        lines' decoding started in the sandbox: it runs while the input before is ingested."""
        try:
            wl_path = find(self.folder, WORKLOADS)
            sha = sha256_files(self.path, wl_path)
            read = Report()
            decoding = None if store.files.read_whole(sha) else Sandboxed(
                decode, read_lines(wl_path, read), "workload")
            self.ahead = (sha, read, decoding)
        except Exception:  # whatever fails here fails again at this input's turn, and is reported there
            self.ahead = None

    def close(self):
        if self.ahead and self.ahead[2]:
            self.ahead[2].close()
        self.ahead = None

    def __call__(self, store: Store, report: Report, model: str | None):
        sha, read, decoding = self.ahead or (None, None, None)
        self.ahead = None
        with decoding or nullcontext():
            self._ingest(store, report, model, sha, decoding and (read, decoding))

    def _ingest(self, store: Store, report: Report, model: str | None, sha: str | None, decoding):
        wl_path = find(self.folder, WORKLOADS)
        meta = _sidecar(self.folder, report)
        file_id = register_file(store, [self.path, wl_path], "metaschedule", report, sha)
        if file_id is None:
            return
        targets = TargetCache()
        model_id = self._model(store, meta, model, targets, report)
        skipped = report.skipped_lines  # a workload line skipped leaves the work dir unread too
        workloads = self._workloads(store, wl_path, report, meta.get("tvm_version"), decoding)
        _add_tasks(store, model_id, workloads, meta.get("tasks", []))
        by_index = [entry for _, entry in workloads]  # records name workloads by line position
        parser = MsRecordParser(by_index, targets, model_id, file_id, report)
        lines = {i: store.workloads.get(wid)["ms_workload"] for i, (wid, *_) in enumerate(by_index) if wid}
        # The replay check's first round starts now, in a child, on each workload's first
        # trace in the file that looks valid: it runs on the other core while the records are
        # parsed, and counts only where that trace is the first the parse found valid.
        first = _first_traces(self.path, lines)
        with Sandboxed(trace_applies, ((i, replay_payload(lines[i], t)) for i, t in first.items()),
                       "trace") as head_start:
            ingest_lines(store, self.path, file_id, report, parser, skipped)
            cleared = {i for i, _, why in head_start if why is None and parser.samples.get(i, [None])[0] == first[i]}
        if parser.misfits:
            report.warnings.append(f"{self.path}: {parser.misfits} records stored invalid: their trace is not a "
                                   f"schedule of the workload they name (first: line {parser.first_misfit}: "
                                   f"{parser.misfit_why})")
        self._replay_check(store, file_id, wl_path, by_index, {i: (lines[i], t) for i, t in parser.samples.items()},
                           cleared, report)

    def _replay_check(self, store: Store, file_id: int, wl_path: Path, by_index: list, samples: dict,
                      cleared: set, report: Report):
        """Each workload's first valid traces applied to it (sandbox.misplaced): where none
        applies, the workload line is not the one its records were tuned for (a work dir's
        lines out of order, between workloads of the same block names), and its records of
        this file are stored invalid with the reason. ``cleared``: workloads whose first
        trace in the file applied already."""
        for index, why in misplaced(samples, cleared).items():
            n = store.records.mark_file_invalid(file_id, by_index[index][0], f"{NOT_APPLYING}: {why}")
            report.invalid += n
            report.warnings.append(f"{wl_path}: workload line {index + 1}: {n} records stored invalid: "
                                   f"their traces do not apply to it ({why})")

    def _model(self, store: Store, meta: dict, model: str | None, targets: TargetCache, report: Report) -> int:
        """The model's row, from the sidecar; a target it names that does not parse is left out."""
        target = None
        if "target" in meta:
            try:
                target = targets(json.loads(meta["target"]))
            except (ValueError, SchedbError) as e:
                report.warnings.append(f"{self.folder / SIDECAR}: target ignored ({e})")
        name = meta.get("model") or model or printable(self.folder.name)
        return store.models.upsert(name, meta.get("source"), meta.get("input_shapes"), target,
                                  meta.get("tvm_version"))

    def _workloads(self, store, wl_path, report, tvm_version: str | None, decoding=None) -> list:
        """[(the line's structural hash, (workload id, signature, block names, TVM version))]
        in line order; (None, (None, None, None, None)) for a bad line. The TVM version is the
        sidecar's, else the one the workload's graph names, else this TVM's. A workload of an
        older release is stored in this TVM's form. ``decoding``: (its report, the decoding)
        when prepare started it."""
        import tvm

        if decoding is None:
            decoding = load_workloads(wl_path, read_lines(wl_path, report))
        else:
            report.absorb(decoding[0])
            decoding = decoding[1]
        out: list = []
        for lineno, line, w in decoding:
            if isinstance(w, str):
                report.skip(wl_path, lineno, w)
                out.append((None, (None, None, None, None)))  # keep indices aligned with record lines
                continue
            version = tvm_version or w["tvm_version"] or tvm.__version__
            wid, created = commit_workload(store, w["signature"], w["kind"], w["description"], w["shash"],
                                           w["line"] or line.decode().strip(), version)
            report.new_workloads += created
            out.append((w["source_shash"], (wid, w["signature"], frozenset(w["blocks"]), version)))
        return out


def _first_traces(path: Path, lines: dict, limit: int = HEAD_START_LINES) -> dict[int, bytes]:
    """Each readable workload's first trace (its JSON text, as the parse keeps it) among the
    records file's first ``limit`` lines, from a line that looks valid: a non-empty trace of
    registered instructions and measured run times. The parse has the last word."""
    out: dict[int, bytes] = {}
    for lineno, raw in read_lines(path, Report()):  # its warnings are the real parse's to give
        if len(out) == len(lines) or lineno > limit:
            break
        try:
            index, rec = _record(raw)
            if index not in lines or index in out or len(rec[0][0]) == 0:
                continue
            check_trace(rec[0])
            if check_run_secs(rec[1].as_list())[2]:
                out[index] = rec[0].mini
        except (Skip, TypeError, ValueError, IndexError, KeyError, AttributeError):
            continue
    return out


def _record(raw: bytes) -> tuple[int, Array]:
    """A record line's workload index and its ``[trace, run_secs, target, args_info]``."""
    obj = parse_json(raw)
    if (type(obj) is not Array or len(obj) != 2 or type(index := obj[0]) is not int
            or type(rec := obj[1]) is not Array or len(rec) < 2):
        raise Skip("expected [workload_index, [trace, run_secs, target, args_info]]")
    return index, rec


def _add_tasks(store: Store, model_id: int, workloads: list, sidecar_tasks: list):
    """The model's tasks: the workloads the sidecar names (with its names and weights), or
    every readable one when it names none."""
    tasks = {t["shash"]: t for t in sidecar_tasks}
    for shash, (wid, *_) in workloads:
        if wid is None or (tasks and shash not in tasks):
            continue  # unreadable, or stored but not a task of this model (TVM keeps extra workloads)
        task = tasks.get(shash, {})
        store.models.add_task(model_id, wid, task.get("name"), task.get("weight"))


# The sidecar's fields and their types: a field of another type is dropped with a warning.
_SIDECAR_FIELDS = {"model": str, "source": str, "input_shapes": list, "target": str, "tvm_version": str,
                   "tasks": list}


def _sidecar(folder: Path, report: Report) -> dict:
    """schedb.json's fields that are usable; a damaged sidecar costs its metadata, not the records."""
    try:
        meta = read_sidecar(folder) or {}
    except SchedbError as e:
        report.warnings.append(f"{e}; its work dir is ingested without it")
        return {}
    good = {k: v for k, v in meta.items() if isinstance(v, _SIDECAR_FIELDS.get(k, object))}
    if "tasks" in good:
        tasks = [t for t in good["tasks"] if isinstance(t, dict) and isinstance(t.get("shash"), str)
                 and isinstance(t.get("name", ""), str) and type(t.get("weight", 0)) is int]
        if len(tasks) < len(good["tasks"]):
            report.warnings.append(f"{folder / SIDECAR}: {len(good['tasks']) - len(tasks)} malformed tasks ignored")
        good["tasks"] = tasks
    for k in sorted(set(_SIDECAR_FIELDS) & meta.keys() - good.keys()):
        report.warnings.append(f"{folder / SIDECAR}: field {k!r} ignored (not a {_SIDECAR_FIELDS[k].__name__})")
    return good


class MsRecordParser:
    """One line of database_tuning_record.json -> a records row (a tuple in
    Records.COLUMNS order, without a dict per record: this is ingest's hot path)."""

    def __init__(self, by_index, targets, model_id, file_id, report):
        """``by_index``: (workload id, signature, block names, TVM version) per workload line."""
        self.by_index, self.targets, self.report = by_index, targets, report
        self.model_id, self.file_id = model_id, file_id
        self.misfits, self.first_misfit, self.misfit_why = 0, None, None
        self.samples: dict[int, list[bytes]] = {}  # workload index -> its first valid traces (JSON)
        self.fits: dict[tuple[int, bytes], str | None] = {}  # (workload index, instructions) -> misfit

    def __call__(self, raw: bytes, lineno: int, stamp: str) -> tuple:
        # The trace never becomes a Python list. Its text is the minified JSON
        # (== orjson.dumps of it, which the digests of earlier ingests used).
        index, rec = _record(raw)
        by_index = self.by_index
        if not 0 <= index < len(by_index) or by_index[index][0] is None:
            raise Skip(f"workload index {index} is not a readable workload")
        wid, sig, blocks, tvm_version = by_index[index]
        trace, run_secs = rec[0], rec[1]
        target, target_json = self._target(rec)
        args = rec[3] if len(rec) > 3 else None
        args_json = args.mini if type(args) in (Array, Object) else None
        compact = None
        if len(rec) == 4 and target_json and args_json and type(run_secs) is Array:
            compact = _compact_trace(raw, index, target_json, args_json)
        instructions = check_trace(trace, compact)
        samples, mean, valid = check_run_secs(run_secs.as_list() if type(run_secs) is Array else run_secs)
        error = None if valid else "failed measurement"
        if valid and (misfit := self._misfit_of(index, instructions, trace, blocks)):
            mean, valid, error = None, False, misfit  # measured, but not a schedule of this workload
            self._misfit(lineno, misfit)
        self.report.invalid += not valid
        trace_json = compact or trace.mini
        if valid and len(kept := self.samples.setdefault(index, [])) < SAMPLES:
            kept.append(trace_json)
        trace_text = trace_json.decode()
        secs_text = _dumps(samples).decode()
        args_text = (None if len(rec) < 4 else args_json.decode() if args_json else _dumps(args).decode())
        # Records.COLUMNS order
        return (wid, target, "ms-trace", trace_text,
                secs_text, mean, int(valid), error,
                args_text, "tuned", None, None, None, None,
                self.model_id, self.file_id, lineno, None, tvm_version, stamp,
                digest_of_text(sig, target, trace_text, secs_text))

    def _misfit_of(self, index: int, instructions: bytes, trace, blocks: frozenset) -> str | None:
        """trace_misfit, once per workload and instruction list (it reads nothing else)."""
        memo, key = self.fits, (index, instructions)
        if key not in memo:
            if len(memo) >= FITS_MAX:
                memo.clear()
            memo[key] = trace_misfit(trace, blocks)
        return memo[key]

    def _misfit(self, lineno: int, why: str):
        """Counted for one warning per file (a misordered work dir makes hundreds)."""
        self.misfits += 1
        if self.first_misfit is None:
            self.first_misfit, self.misfit_why = lineno, why

    def _target(self, rec) -> tuple[str, bytes | None]:
        """The record's canonical target, and its JSON text when the line has it as an object."""
        raw_target = rec[2] if len(rec) > 2 else None
        if type(raw_target) is Object:
            target_json = raw_target.mini
        elif isinstance(raw_target, str):
            target_json = None
        else:
            raise Skip("no target")
        return self.targets.check(raw_target, key=target_json), target_json


def _compact_trace(raw: bytes, index: int, target_json: bytes, args_json: bytes) -> bytes | None:
    """The trace's own text when the line is compact, as TVM writes it: then it is what
    minifying would give, and slicing it out costs a third. None otherwise."""
    head = b"[%d,[" % index
    tail = b"," + target_json + b"," + args_json + b"]]"  # (no floats in either: same text)
    body = raw.rstrip(b"\r\n")
    if not (body.startswith(head) and body.endswith(tail)):
        return None
    rest = body[:-len(tail)]
    cut = rest.rfind(b",[")  # the run times, a list of numbers: the line's last "["
    if cut <= len(head):
        return None
    trace = rest[len(head):cut]
    if b" " in trace or b"\n" in trace or b"\t" in trace or b"\r" in trace:
        return None  # whitespace, in strings or not: let simdjson minify it
    return trace
