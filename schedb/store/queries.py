"""Provenance questions as named SQL: the canned queries of ``schedb browse`` (datasette),
some also behind ``Store`` methods. Parameters are named (``:record``); a text parameter
left empty in the browser means "any"."""

from __future__ import annotations

# A record and its ancestors back to the original log line, nearest first. The walk stops
# where a parent is already in the chain (a damaged or forged file may hold a cycle): the
# last row's parent_id then names a record above it.
LINEAGE = """
WITH RECURSIVE chain(id, depth, seen) AS (
    SELECT CAST(:record AS INTEGER), 0, ',' || CAST(:record AS INTEGER) || ','
    UNION ALL
    SELECT r.parent_id, c.depth + 1, c.seen || r.parent_id || ',' FROM chain c JOIN records r ON r.id = c.id
    WHERE r.parent_id IS NOT NULL AND instr(c.seen, ',' || r.parent_id || ',') = 0
)
SELECT c.depth, r.id, r.parent_id, r.origin, r.workload_id, w.kind, r.mean_s, r.valid,
       r.source_workload_id, r.distance, r.search_time_s,
       m.name AS model, f.path AS file, f.format AS file_format, r.line, r.target,
       r.tvm_version, r.created_at
FROM chain c JOIN records r ON r.id = c.id
JOIN workloads w ON w.id = r.workload_id
LEFT JOIN models m ON m.id = r.model_id
LEFT JOIN files f ON f.id = r.file_id
ORDER BY c.depth
"""

# Every measurement of a workload in the order it was made (by input file and line, then
# as stored), with the best time so far: a search's progress.
SEARCH_HISTORY = """
SELECT ROW_NUMBER() OVER (ORDER BY r.file_id IS NULL, r.file_id, r.line, r.id) AS n,
       r.id, r.origin, r.valid, r.mean_s * 1e6 AS us,
       MIN(r.mean_s * 1e6) OVER (ORDER BY r.file_id IS NULL, r.file_id, r.line, r.id) AS best_us,
       m.name AS model, f.path AS file, r.line, r.target, r.created_at
FROM records r
LEFT JOIN models m ON m.id = r.model_id
LEFT JOIN files f ON f.id = r.file_id
WHERE r.workload_id = CAST(:workload AS INTEGER)
ORDER BY n
"""

BEST_PER_WORKLOAD = """
SELECT w.id AS workload, w.kind, json_extract(b.target, '$.mcpu') AS cpu, b.id AS record,
       b.mean_s * 1e6 AS us, b.origin, m.name AS model, b.target
FROM best_records b JOIN workloads w ON w.id = b.workload_id
LEFT JOIN models m ON m.id = b.model_id
WHERE :kind = '' OR w.kind LIKE '%' || :kind || '%'
ORDER BY w.id, cpu
"""

# Records whose lineage reaches a record of the model, or of a file whose path contains
# the text given: what came from it (depth 0: its own records).
FROM_MODEL_OR_FILE = """
SELECT l.record_id AS record, MIN(l.depth) AS depth, r.origin, r.workload_id, w.kind,
       r.mean_s * 1e6 AS us, rm.name AS record_model, l.model AS from_model, l.file AS from_file
FROM record_lineage l
JOIN records r ON r.id = l.record_id
JOIN workloads w ON w.id = r.workload_id
LEFT JOIN models rm ON rm.id = r.model_id
WHERE (:model != '' AND l.model = :model) OR (:file != '' AND l.file LIKE '%' || :file || '%')
GROUP BY l.record_id
ORDER BY depth DESC, l.record_id
"""

TRANSFERRED_FROM_OTHER_CPU = """
SELECT r.id AS record, w.id AS workload, w.kind, m.name AS model,
       json_extract(p.target, '$.mcpu') AS tuned_for, json_extract(r.target, '$.mcpu') AS measured_on,
       p.id AS parent, p.mean_s * 1e6 AS there_us, r.mean_s * 1e6 AS here_us,
       (SELECT MIN(o.mean_s) * 1e6 FROM records o WHERE o.workload_id = r.workload_id
        AND o.target = r.target AND o.valid = 1 AND o.id != r.id AND o.origin != 'transferred') AS best_other_here_us
FROM records r JOIN records p ON p.id = r.parent_id
JOIN workloads w ON w.id = r.workload_id
LEFT JOIN models m ON m.id = r.model_id
WHERE r.origin = 'transferred' AND p.target != r.target
ORDER BY r.id
"""

# name -> (title, description, SQL): datasette's canned queries.
CANNED = {
    "lineage": ("Lineage of a record",
                "The record and each of its ancestors back to the log line it came from.", LINEAGE),
    "best_per_workload": ("Best schedule per workload and target",
                          "The fastest valid record of every workload on every target "
                          "(kind: part of a kind such as conv2d, or empty for all).", BEST_PER_WORKLOAD),
    "from_model_or_file": ("What came from a model or file",
                           "Records whose lineage reaches a record of this model, or of an input file "
                           "whose path contains this text (leave the other empty).", FROM_MODEL_OR_FILE),
    "transferred_from_other_cpu": ("Transferred from another CPU",
                                   "Schedules tuned for one CPU, measured and kept on another: their time "
                                   "there, here, and the best record of another origin here.",
                                   TRANSFERRED_FROM_OTHER_CPU),
    "search_history": ("Search history of a workload",
                       "Every measurement of the workload in the order made, with the best so far "
                       "(a chart: /-/schedb/chart?workload=ID).", SEARCH_HISTORY),
}
