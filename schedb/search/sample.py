"""Sample: schedules drawn from MetaSchedule's own design space for a kernel that nothing
in the database fits, so that no kernel of a model ships with TVM's naive default."""

from __future__ import annotations

from schedb.errors import SchedbError


def sample_schedules(mod, target, n: int, seed: int = 0) -> list:
    """Up to ``n`` distinct schedules of ``mod`` (tvm Schedules, postprocessed), drawn as
    MetaSchedule's ``replay-trace`` strategy does: its design space's traces with random
    decisions. Draws that schedule the kernel alike are one (a design space without
    decisions, a concatenation's say, gives n copies of one schedule: each measured costs
    a build and a run). A kernel MetaSchedule cannot schedule raises SchedbError."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    ctx = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply",
                         search_strategy="replay-trace", task_name="sample", rand_state=seed, num_threads=1)
    try:
        spaces = ctx.generate_design_space()
        strategy = ctx.search_strategy
        strategy.pre_tuning(n, n, spaces)
        candidates = strategy.generate_measure_candidates() or []
        strategy.post_tuning()
    except Exception as e:  # TVM's own error types: this kernel has no design space to draw from
        raise SchedbError(f"MetaSchedule cannot sample schedules for it: {e}") from None
    seen, out = set(), []
    for c in candidates:
        if (h := tvm_ffi.structural_hash(c.sch.mod)) not in seen:
            seen.add(h)
            out.append(c.sch)
    return out
