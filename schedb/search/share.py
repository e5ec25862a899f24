"""MetaSchedule's trials spent where the model's latency is: the droplet allocator's rule
(schedb.search.allocate) as a MetaSchedule task scheduler.

Round-robin gives every task the same batches, whatever it weighs in the model, and
MetaSchedule's gradient scheduler commits nothing of its first pass over the tasks until
that pass is over (a kill loses all of it). ``LatencyShare`` gives each batch to the open
task with the largest weight x best kernel time x ``decay`` ** (its batches since it last
improved). The best time is read from the database tuned into: the transferred or stored
records the search starts from, then every batch measured, so the estimates follow the
search. Like round-robin it joins a task's batch in flight before giving the task another,
so each batch is committed once it has run.
"""

from __future__ import annotations

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler

from schedb.search.allocate import Allocator


@derived_object
class LatencyShare(PyTaskScheduler):
    """``database``: the MetaSchedule database the tuning commits to (its best record of a
    task is the task's current kernel time)."""

    def __init__(self, database, decay: float = 0.5):
        super().__init__()
        self.database, self.decay = database, decay
        self.alloc = Allocator(seconds=float("inf"), decay=decay)
        self.workloads: list = []
        self.sent: list[int] = []  # batches given to each task
        self.seen: list[int] = []  # of them, those measured and booked

    def next_task_id(self) -> int:
        scheduler = self._outer()
        tasks = scheduler.tasks_
        if not self.workloads:  # the first call: tune_tasks has made the task records by now
            self.workloads = [self.database.commit_workload(t.ctx.mod) for t in tasks]
            self.sent, self.seen = [0] * len(tasks), [0] * len(tasks)
            for i, t in enumerate(tasks):
                self.alloc.add(i, t.task_weight, self._best(i))
        for i in range(len(tasks)):
            scheduler.touch_task(i)  # joins a batch that has run
            self._book(i, tasks[i])
        while (pick := self.alloc.next()) is not None:
            i = pick[0]
            if tasks[i].measure_candidates is None:
                self.sent[i] += 1
                return i
            scheduler.join_running_task(i)  # its batch in flight first: what that found counts
            self._book(i, tasks[i])
        return -1

    def _book(self, i: int, task) -> None:
        """Charge task ``i``'s batches measured since the last look; close it once terminated."""
        if task.is_terminated:
            self.alloc.accounts[i].done = True
            return
        if task.measure_candidates is not None or self.seen[i] == self.sent[i]:
            return
        self.seen[i] = self.sent[i]
        best = self._best(i)
        self.alloc.charge(i, 0, 0.0, best, improved=best < self.alloc.accounts[i].time, done=False)

    def _best(self, i: int) -> float:
        """Task ``i``'s best stored time in seconds; a task with none yet counts as heavy as
        the heaviest known kernel, so it gets tried but does not hold the search forever."""
        records = self.database.get_top_k(self.workloads[i], 1)
        secs = [float(s) for s in records[0].run_secs] if records and records[0].run_secs else []
        if secs:
            return sum(secs) / len(secs)
        known = [a.time for a in self.alloc.accounts.values() if a.time != float("inf")]
        return max(known) if known else float("inf")
