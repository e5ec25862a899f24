"""MetaSchedule's cost model, warm-started from what a database already holds.

MetaSchedule's evolutionary search starts from a database's best records, but its XGBoost
cost model starts empty: until it has seen ``num_warmup_samples`` measurements (100) it
ranks candidates at random, so a short run spends its first batches on guesses. Here the
model first learns from the database's measured records of each task's workload (after a
transfer: the neighbours' schedules replayed and measured on this very task), the same
update MetaSchedule makes after each measured batch.
"""

from __future__ import annotations

PER_TASK = 256  # records per task the model learns from (the database's fastest)


def warm_cost_model(contexts, database, per_task: int = PER_TASK) -> tuple[object, int]:
    """(an XGB cost model, as ``tune_tasks`` makes its own, updated with the measured
    records ``database`` holds for each context's workload; how many it learned from)."""
    from tvm.s_tir import meta_schedule as ms

    model = ms.cost_model.CostModel.create("xgb", num_tuning_cores=contexts[0].num_threads, tree_method="auto")
    learned = 0
    for ctx in contexts:
        candidates, results = _measured(ctx, database, per_task)
        if candidates:
            model.update(ctx, candidates, results)
            learned += len(candidates)
    return model, learned


def _measured(ctx, database, per_task: int) -> tuple[list, list]:
    """The task's stored records as MetaSchedule's measure candidates and runner results;
    a record whose trace no longer applies is left out."""
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms

    if not database.has_workload(ctx.mod):
        return [], []
    args_info = ms.arg_info.ArgInfo.from_prim_func(ctx.mod["main"])
    candidates, results = [], []
    for record in database.get_top_k(database.commit_workload(ctx.mod), per_task):
        if not record.run_secs:
            continue
        sch = Schedule(ctx.mod)
        try:
            record.trace.apply_to_schedule(sch, remove_postproc=False)
        except Exception:  # TVM's own error types: the trace does not apply (any more)
            continue
        candidates.append(ms.MeasureCandidate(sch, record.args_info or args_info))
        results.append(ms.runner.RunnerResult([float(s) for s in record.run_secs], None))
    return candidates, results
