"""A record's identity, validity and commit: the one place that decides what a stored
schedule is (ingest, transfer, droplet and the MetaSchedule adapter all go through it)."""

from __future__ import annotations

import hashlib
import math
import json

from schedb.store.store import Store, dumps, now
from schedb.tir.replay import as_json
from schedb.tir.signature import signature

# MetaSchedule writes 1e10 s for a failed build or run: any sample this large is a failure.
INVALID_RUN_SECS = 1e9
# No kernel runs in under a nanosecond: a log's smaller "time" (a denormal) is not a
# measurement (ingest's check; a run time of 0.0 reported by TVM itself is kept, as TVM does).
MIN_RUN_SECS = 1e-9


def valid_samples(samples, partial: bool = False) -> bool:
    """Every sample a time, 0 or more (False for None, [], nan, inf and MetaSchedule's 1e10).
    ``partial``: TVM's rule (TuningRecord::IsValid), valid when at least one sample is a
    time and every one is finite and not negative; the mean then counts the failed samples too, so such a
    record ranks after every fully measured one."""
    if not samples or not all(0 <= s < math.inf for s in samples):  # (nan compares False)
        return False
    if partial:
        return any(s < INVALID_RUN_SECS for s in samples)
    return all(s < INVALID_RUN_SECS for s in samples)


def record_digest(signature: str, target: str, trace: str, run_secs) -> bytes:
    """A record's identity: workload signature, canonical target, trace text (as
    ``dumps`` writes it) and run times. The same record from any source has one digest.

    The first 128 bits (16 bytes, records.digest) of their sha256. Enough: by the birthday
    bound, 10^9 distinct records collide with probability ~n^2 / 2^129 = 1.5e-21, and a
    deliberate collision costs ~2^64 hash evaluations; a collision would only make ingest
    skip one record as a duplicate, never mix two records' content."""
    return digest_of_text(signature, target, trace, dumps(run_secs))


def digest_of_text(signature: str, target: str, trace: str, run_secs_text: str) -> bytes:
    """record_digest with the run times already serialized (``dumps(run_secs)``)."""
    return hashlib.sha256("\x1f".join((signature, target, trace, run_secs_text)).encode()).digest()[:16]


def commit_mod(store: Store, mod) -> tuple[int, str, str, dict]:
    """The workload row of a TIR module, created if new: (id, signature, kind, description)."""
    import tvm
    import tvm_ffi
    from tvm.s_tir.meta_schedule.database import Workload

    sig, kind, desc = signature(mod)
    wid, _ = commit_workload(
        store, sig, kind, desc, shash=str(tvm_ffi.structural_hash(mod)),
        ms_workload=json.dumps([str(x) for x in Workload(mod).as_json()]), tvm_version=tvm.__version__)
    return wid, sig, kind, desc


def commit_workload(store: Store, sig: str, kind: str, desc: dict, shash: str, ms_workload: str,
                    tvm_version: str) -> tuple[int, bool]:
    """The workload row of a TIR module given as ``signature`` describes it, created if
    new: (id, created). Its shapes and dtypes are those of its buffer parameters."""
    params = [p for p in desc["params"] if "shape" in p]  # (a scalar parameter has neither)
    return store.workloads.upsert(
        sig, kind, [p["shape"] for p in params], [p["dtype"] for p in params],
        shash=shash, description=desc, ms_workload=ms_workload, tvm_version=tvm_version)


def commit_trace(store: Store, wid: int, sig: str, target: str, trace, samples: list[float] | None,
                 origin: str, partial: bool = False, **provenance) -> int:
    """Store a measured schedule (tuned, transferred, droplet) with its provenance (``parent_id``,
    ``model_id``, ``run_id``: the run that made it, ...); returns its id. ``trace``: a TVM Trace or
    its JSON. ``partial``: valid_samples's TVM rule."""
    import tvm

    trace_text = dumps(as_json(trace))
    valid = valid_samples(samples, partial)
    return store.records.add(
        workload_id=wid, target=target, format="ms-trace", trace=trace_text,
        run_secs=dumps(samples), mean_s=sum(samples) / len(samples) if valid else None,
        valid=int(valid), error=None if valid else "failed measurement", origin=origin,
        tvm_version=tvm.__version__, created_at=now(),
        digest=record_digest(sig, target, trace_text, samples), **provenance,
    )




def workload_module(ms_workload: str):
    """The TIR module of a stored workload (``workloads.ms_workload``)."""
    from tvm.s_tir.meta_schedule.database import Workload

    return Workload.from_json(json.loads(ms_workload)).mod


def record_details(store: Store, record_id: int, script: bool = True) -> dict | None:
    """A record for people (None if there is none): ``row`` (the stored columns, digest in
    hex), ``lineage`` (its own lineage row: model, file, kind), and ``script``, the trace as
    TVM's Python form of the schedule (what ``Trace.show()`` prints), or None with
    ``script_note`` saying why (a legacy Ansor record, a trace this TVM cannot read;
    ``script=False``: not asked for, TVM not imported)."""
    row = store.records.get(record_id)
    if row is None:
        return None
    if isinstance(row["digest"], bytes):
        row["digest"] = row["digest"].hex()
    out = {"row": row, "lineage": store.records.lineage(record_id)[0], "script": None, "script_note": None}
    if not script:
        return out
    ms_workload = store.workloads.get(row["workload_id"])["ms_workload"]
    if row["format"] != "ms-trace" or not ms_workload:
        out["script_note"] = f"a {row['format']} record (legacy Ansor): its steps as stored"
        return out
    try:
        from tvm.s_tir.meta_schedule.database import TuningRecord, Workload

        rec = TuningRecord.from_json(
            [json.loads(row["trace"]), json.loads(row["run_secs"] or "null"), json.loads(row["target"]),
             json.loads(row["args_info"]) if row["args_info"] else None],
            Workload.from_json(json.loads(ms_workload)))
        out["script"] = str(rec.trace)
    except Exception as e:  # TVM's own error types: a trace of another TVM version, say
        first = next((x.strip() for x in reversed(str(e).splitlines()) if x.strip()), type(e).__name__)
        out["script_note"] = f"this TVM cannot read the trace ({first[:200]}): shown as stored"
    return out


def workload_details(store: Store, workload_id: int) -> dict:
    """``Store.workload_summary`` and ``script``: the workload's TIR as TVM script (None for
    a legacy Ansor workload, which has no TIR stored)."""
    summary = store.workloads.summary(workload_id)
    ms_workload = store.workloads.get(workload_id)["ms_workload"]
    summary["script"] = workload_module(ms_workload).script() if ms_workload else None
    return summary
