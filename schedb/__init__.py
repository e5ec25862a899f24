"""schedb: a schedule database for Apache TVM.

Layers, each importing only those before it:
models (PyTorch/ONNX loaders, the zoo) -> tir (targets, tasks, workload signatures, trace
replay, anchors, vector-ISA adaptation) -> store (the SQLite file: every SQL statement, records, the MetaSchedule
``Database`` adapter) and ingest (log formats into the store) -> search (k-NN index,
droplet, measurement engine; no storage) -> pipeline (tune, transfer, refine, neighbors,
evaluate) -> cli. The names below are the public API, with ``schedb.ingest.ingest``
(the subpackage owns the name); ``from schedb import X`` imports TVM only for what needs it.
"""

from __future__ import annotations

import importlib

from schedb.tir.target import use_host_cores

__version__ = "0.1.0"
use_host_cores()  # before any TVM kernel runs in this process or a child

_PUBLIC = {
    "SchedbError": "schedb.errors",
    "Model": "schedb.models", "load_model": "schedb.models", "ZOO": "schedb.models.zoo",
    "parse_target": "schedb.tir.target", "canonical": "schedb.tir.target", "label": "schedb.tir.target",
    "target_distance": ("schedb.tir.target", "distance"), "host_target_dict": "schedb.tir.target",
    "host_cores": "schedb.tir.target",
    "load_intrinsics": "schedb.tir.target", "vector_unit": "schedb.tir.target", "VectorUnit": "schedb.tir.target",
    "adapt_trace": ("schedb.tir.isa", "adapt"),
    "lower": "schedb.tir.tasks", "extract_tasks": "schedb.tir.tasks", "Task": "schedb.tir.tasks",
    "select_tasks": "schedb.tir.tasks", "shards": "schedb.tir.tasks", "task_cost": "schedb.tir.tasks",
    "signature": "schedb.tir.signature", "apply_trace": "schedb.tir.replay", "anchor_of": "schedb.tir.anchor",
    "Store": "schedb.store", "SCHEMA_VERSION": "schedb.store", "commit_trace": "schedb.store.records",
    "commit_mod": "schedb.store.records", "record_digest": "schedb.store.records",
    "Database": "schedb.store.database",
    "IngestReport": ("schedb.ingest", "Report"),
    "export_workdir": "schedb.ingest.workdir", "open_workdir": "schedb.ingest.workdir",
    "Index": "schedb.search.index", "features": "schedb.search.index",
    "Engine": "schedb.search.measure", "Measurement": "schedb.search.measure", "WarmBuilder": "schedb.search.measure",
    "droplet": "schedb.search.droplet", "refine_many": "schedb.search.droplet",
    "DropletParams": "schedb.search.droplet",
    "tune": "schedb.pipeline.tune", "TuneBudget": "schedb.pipeline.tune",
    "fast": "schedb.pipeline.fast", "FastOptions": "schedb.pipeline.fast", "choose": "schedb.pipeline.choose", "Choice": "schedb.pipeline.choose",
    "transfer": "schedb.pipeline.transfer", "Options": "schedb.pipeline.transfer",
    "NativeOptions": "schedb.pipeline.native",
    "TransferReport": "schedb.pipeline.transfer", "Winner": "schedb.pipeline.transfer",
    "refine_stored": "schedb.pipeline.refine", "neighbors": "schedb.pipeline.neighbors",
    "compile_model": "schedb.pipeline.evaluate", "time_vm": "schedb.pipeline.evaluate",
    "time_torch": "schedb.pipeline.evaluate", "winners_database": "schedb.pipeline.evaluate",
    "end_to_end": "schedb.pipeline.evaluate", "open_schedules": "schedb.pipeline.evaluate",
    "compile_variants": "schedb.pipeline.evaluate", "time_interleaved": "schedb.pipeline.evaluate",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    # Lazy: importing TVM costs seconds, and `schedb sql` / `schedb show` never need it.
    if name not in _PUBLIC:
        raise AttributeError(f"module 'schedb' has no attribute {name!r}")
    module, attr = _PUBLIC[name] if isinstance(_PUBLIC[name], tuple) else (_PUBLIC[name], name)
    return getattr(importlib.import_module(module), attr)
