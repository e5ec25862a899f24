"""Another schedb database's rows copied into this one, ids mapped."""

from __future__ import annotations

import json

from schedb.store import schema

# What a damaged or forged row of another database raises when it is read.
ROW_ERRORS = (ValueError, TypeError, KeyError, AttributeError)


def merge(into, other, check=None) -> dict:
    """Copy every row of ``other`` into ``into`` (both Stores), ids mapped, duplicates (by
    digest) skipped: {new_workloads, new_records, duplicates, invalid, choices, skipped:
    [(what, why)]}. ``check(row)`` validates a record row (and may correct its validity) or
    raises ValueError(why): such a row is skipped, as are its descendants' links to it.
    ``other``'s standing choices come along where they still hold (:func:`merge_choices`);
    a malformed one is skipped."""
    out = dict.fromkeys(("new_workloads", "new_records", "duplicates", "invalid", "choices"), 0)
    out["skipped"] = []
    files = {f["id"]: into.files.copy(f) for f in other.files.rows()}
    models = {m["id"]: into.models.upsert(m["name"], m["source"], m["input_shapes"], m["target"], m["tvm_version"])
              for m in other.models.rows()}
    workloads = {}
    for w in other.workloads.rows():
        try:
            wid, created = into.workloads.upsert(
                w["signature"], w["kind"], json.loads(w["shapes"]), json.loads(w["dtypes"]),
                w["shash"], w["legacy_key"], w["description"], w["ms_workload"], w["tvm_version"])
        except ROW_ERRORS as e:  # a damaged row: skipped, every other one still comes in
            out["skipped"].append((f"workload {w['id']}", f"malformed ({type(e).__name__})"))
            continue
        workloads[w["id"]] = wid
        out["new_workloads"] += created
    for t in other.models.task_rows():
        if t["model_id"] not in models or t["workload_id"] not in workloads:
            out["skipped"].append((f"task of model {t['model_id']}, workload {t['workload_id']}",
                                   "names a model or workload that is not there"))
            continue
        into.models.add_task(models[t["model_id"]], workloads[t["workload_id"]], t["task_name"], t["weight"])
    ids = merge_records(into, other, check, {"workload_id": workloads, "source_workload_id": workloads,
                                             "model_id": models, "file_id": files}, out)
    out["choices"] = merge_choices(into, other, workloads, ids, out["skipped"])
    return out


def merge_records(into, other, check, maps: dict, out: dict, samples: int = 2) -> dict:
    """``other``'s records in, their references mapped by ``maps`` (column -> {old id: new});
    counts added to ``out``, and ``out["traces"]``: {workload id: (ids of the valid MetaSchedule
    records stored, the first ``samples`` of their traces)}. -> {old record id: new}."""
    ids: dict = {}
    traces = out["traces"] = {}
    old_digests = other.version() < 3  # hex text: as the schema 3 migration converts them
    for r in other.records.all():  # parents first: a parent is always older
        old = r.pop("id")
        if check is not None:
            try:
                check(r)
            except ValueError as e:
                out["skipped"].append((f"record {old}", str(e)))
                continue
        if old_digests:
            r["digest"] = schema.digest_from_v2(r["digest"])
        if r["workload_id"] not in maps["workload_id"]:
            out["skipped"].append((f"record {old}", "its workload is not there"))
            continue
        for col, m in maps.items():
            r[col] = m[r[col]] if col == "workload_id" else m.get(r[col])
        r["parent_id"] = ids.get(r["parent_id"])
        new = into.records.insert([r])
        out["new_records"] += new
        out["duplicates"] += 1 - new
        out["invalid"] += new and not r["valid"]
        ids[old] = into.records.id_of(r["workload_id"], r["digest"])
        if new and r["valid"] and r["format"] == "ms-trace":
            stored, first = traces.setdefault(r["workload_id"], ([], []))
            stored.append(ids[old])
            if len(first) < samples:
                first.append(r["trace"].encode())
    return ids


def merge_choices(into, other, workloads: dict, ids: dict, skipped: list) -> int:
    """Copy ``other``'s standing choices whose contenders are still all there is: a choice
    is kept only where ``into`` has none for the workload and target and every valid record
    it now holds for them is one the choice saw (a record of ``other`` no newer than the
    choice), since a record the measurement never met may be faster. A choice that does not
    parse is added to ``skipped``. -> how many were copied."""
    n = 0
    for c in other.choices.rows():
        try:
            n += merge_choice(into, other, c, workloads, ids)
        except ROW_ERRORS as e:  # a damaged or forged row
            skipped.append((f"choice of workload {c['workload_id']}", f"malformed ({type(e).__name__})"))
    return n


def merge_choice(into, other, c: dict, workloads: dict, ids: dict) -> bool:
    if other.choices.get(c["workload_id"], c["target"]) is None or c["record_id"] not in ids | {None: None}:
        return False
    wid = workloads[c["workload_id"]]
    seen = {ids[i] for i in other.choices.contender_ids(c["workload_id"], c["target"], c["upto_record_id"])
            if i in ids}
    if into.choices.exists(wid, c["target"]) or not into.choices.contender_ids(wid, c["target"]) <= seen:
        return False
    if not isinstance(c["chosen_at"], str):
        raise TypeError("chosen_at is not text")
    contenders = [{**x, "record_id": ids.get(x["record_id"])} for x in json.loads(c["contenders"])]
    into.choices.record(wid, c["target"], ids.get(c["record_id"]), contenders, c["chosen_at"])
    return True
