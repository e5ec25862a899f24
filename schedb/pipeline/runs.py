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


def choice_tasks(store: Store, choices: list[dict]) -> list[RunTask]:
    """The tasks a tune run decided side by side (Choice.as_json), as run tasks."""
    return [RunTask(c["task"], c["source"], c["workload_id"], c["weight"], _model_of(store, c["record_id"]), None,
                    c["record_id"], c["untuned_us"], c["chosen_us"]) for c in choices]


def _model_of(store: Store, record_id: int | None) -> str | None:
    row = store.records.get(record_id) if record_id is not None else None
    return store.models.name_of(row["model_id"]) if row else None


def fast_tasks(store: Store, results, run_id: int) -> list[RunTask]:
    """A fast run's tasks: each as its transfer left it, unless its tuning run (a child of
    ``run_id``) decided it side by side afterwards."""
    tuned = {t.task: t for child in store.runs.list(parent=run_id) if child.kind == "tune"
             for t in store.runs.get(child.id).tasks}
    return [tuned.get(t.task, t) for t in transfer_tasks(results)]
