"""Runs: every transfer, tune, droplet and fast run keeps its row in the database
(store.runs), written when it starts and completed when it ends, so what a run did can be
asked in SQL or seen in ``schedb browse`` long after its JSON report is gone."""

from __future__ import annotations

from contextlib import contextmanager

from schedb.store import Store
from schedb.store.tables import RunTask


@contextmanager
def failing(store: Store, run_id: int | None):
    """Around a run's work: an exception marks the run failed (with its first line) and goes on."""
    try:
        yield
    except BaseException as e:
        if run_id is not None:
            store.runs.fail(run_id, "interrupted" if isinstance(e, KeyboardInterrupt) else _first_line(e))
        raise


def _first_line(e: BaseException) -> str:
    text = next((x.strip() for x in str(e).splitlines() if x.strip()), "")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def transfer_tasks(results) -> list[RunTask]:
    """A transfer's TaskResults as run tasks: the kernel it chose (refined, else transferred,
    else the untuned kernel) and the untuned kernel measured beside it."""
    out = []
    for r in results:
        chosen = r.refined_us or r.transferred_us or (r.untuned_us if r.source == "untuned" else None)
        out.append(RunTask(r.task, r.source, r.workload_id, r.weight, r.source_model, r.source_record_id,
                           r.refined_record_id or r.record_id, r.untuned_us, chosen))
    return out
