"""Legacy Ansor (auto_scheduler) logs into the store: JSON lines ``{"i", "r", "v"}``, with
the kernel classes of a ``wkl_classes.json`` beside them. Stored for query and
provenance: this TVM has no Ansor to replay them."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import orjson

from schedb.errors import printable
from schedb.store import Store, dumps, loads
from schedb.store.records import digest_of_text
from schedb.ingest.checks import TargetCache, check_run_secs
from schedb.ingest.lines import Report, Skip, ingest_lines, read_lines
from schedb.ingest.source import Source, register_file

CLASS_MAP = "wkl_classes.json"  # beside a log: which kernel class each of its workloads is
CLASSIFY_LINES = 20  # lines read to recognise a log: a damaged first line does not hide one


def looks_like_ansor(path: Path) -> bool:
    """An Ansor record, ``{"i": ..., "r": ...}``, among the first non-blank lines."""
    probe = Report()  # read problems are reported when the file is ingested, not here
    for n, (_, line) in enumerate(read_lines(path, probe)):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:  # not JSON, bad UTF-8, nested too deep
            obj = None
        if isinstance(obj, dict) and "i" in obj and "r" in obj:
            return True
        if n + 1 >= CLASSIFY_LINES:
            break
    return False


class AnsorLog(Source):
    """Legacy auto_scheduler logs: stored for query and provenance, not replayable."""

    def __call__(self, store: Store, report: Report, model: str | None):
        file_id = register_file(store, [self.path], "ansor", report)
        if file_id is None:
            return
        classes = _wkl_classes(self.path.parent, report)
        name = model or re.sub(r"(\.best)?\.jsonl?(\.gz)?$", "", printable(self.path.name))
        model_id = store.models.upsert(name, f"legacy-ansor:{printable(self.path.name)}")
        ingest_lines(store, self.path, file_id, report, AnsorRecordParser(store, classes, model_id, file_id, report))


class AnsorRecordParser:
    """One line of an Ansor log -> a records row (a tuple in Records.COLUMNS order);
    the workload row is added when a line names its workload key first."""

    def __init__(self, store: Store, classes: dict[str, str], model_id: int, file_id: int, report: Report):
        self.store, self.classes, self.report = store, classes, report
        self.model_id, self.file_id = model_id, file_id
        self.targets = TargetCache()
        self.workloads: dict[str, tuple[int, str]] = {}

    def __call__(self, line: bytes, lineno: int, stamp: str) -> tuple:
        wkey, target_str, steps, costs, error_no, timestamp, version = _fields(line)
        if wkey not in self.workloads:
            self.workloads[wkey] = self._workload(wkey)
        wid, sig = self.workloads[wkey]
        target = self.targets.check(target_str)
        samples, mean, valid = check_run_secs(costs)
        valid = valid and error_no == 0
        self.report.invalid += not valid
        self.report.invalid_ansor += not valid
        trace_text = dumps(steps)
        secs_text = dumps(samples)
        # Records.COLUMNS order
        return (wid, target, "ansor-steps", trace_text,
                secs_text, mean if valid else None, int(valid),
                None if valid else f"ansor error_no {error_no}",
                None, "legacy-ansor", None, None, None, None,
                self.model_id, self.file_id, lineno, _measured_at(timestamp),
                _version(version), stamp,
                digest_of_text(sig, target, trace_text, secs_text))

    def _workload(self, wkey: str) -> tuple[int, str]:
        try:
            key = json.loads(wkey)
        except (ValueError, RecursionError):
            key = None
        if not isinstance(key, list) or not key or not isinstance(key[0], str):
            raise Skip("workload key is not a JSON list [name, args...]")
        shapes = [s for s in key[1:] if isinstance(s, list)]
        digest = hashlib.sha256(wkey.encode()).hexdigest()
        kind = self.classes.get(digest, "unknown")
        sig = "ansor:" + digest
        wid, created = self.store.workloads.upsert(sig, kind, shapes, ["float32"] * len(shapes),
                                                  legacy_key=wkey)
        self.report.new_workloads += created
        self.store.models.add_task(self.model_id, wid)
        return wid, sig


def _fields(line: bytes) -> tuple:
    """(workload key, target, steps, costs, error_no, timestamp, version) of an Ansor line;
    key, target, steps and error_no checked for their types, the rest as the line has them."""
    try:
        obj = loads(line)
        inp, res = obj["i"], obj["r"]
        (wkey, target_str, *_), (_, steps) = inp[0], inp[1]
        costs, error_no, _all_cost, timestamp = res
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Skip(f"not JSON ({getattr(e, 'msg', None) or e.reason})") from None
    except RecursionError:
        raise Skip("not JSON (nested too deeply)") from None
    except (KeyError, TypeError, ValueError):
        raise Skip("not an Ansor record ({'i': [[key, target, ...], [[], steps]], 'r': [...]})") from None
    if not isinstance(wkey, str) or not isinstance(target_str, str) or not isinstance(steps, list):
        raise Skip("bad workload key, target or steps")
    if type(error_no) is not int:
        raise Skip("error_no is not an integer")
    return wkey, target_str, steps, costs, error_no, timestamp, obj.get("v")


def _measured_at(timestamp) -> str | None:
    """When Ansor measured the record (ISO, UTC); None for a timestamp no measurement has."""
    if isinstance(timestamp, (int, float)) and 0 < timestamp < 1e11:  # also False for nan
        return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")
    return None


def _version(v) -> str | None:
    # (json's fallback parse lets a lone surrogate through, which SQLite cannot store)
    return v if isinstance(v, str) and v.isascii() else None


def _wkl_classes(folder: Path, report: Report) -> dict[str, str]:
    """sha256(workload_key) -> kernel class, from a wkl_classes.json beside the log."""
    p = folder / CLASS_MAP
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
        return {h: re.sub(r"^vm_mod_fused_|_\d+$", "", cls) for cls, hs in data.items() for h in hs}
    except (json.JSONDecodeError, AttributeError, TypeError) as e:
        report.warnings.append(f"{p}: ignored, not a class map ({e})")
        return {}
