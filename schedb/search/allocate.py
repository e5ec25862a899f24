"""One search budget shared across a model's tasks by where the end-to-end time is.

Rounds: each gives the next batch to the open task with the largest
weight x current best kernel time x prior of the improvement left, the prior being
``decay`` to the power of the batches since the task last improved. So the budget goes
first to the kernels that dominate latency, a task that stops improving yields to the
others, and the estimates follow the search (a kernel that got faster claims less). A task
whose neighbourhood is exhausted leaves. Pure bookkeeping: the caller measures and tells
:meth:`Allocator.charge` what each batch cost and found.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Account:
    """What one task has spent and where it stands."""

    weight: float  # occurrences of the kernel in the model
    time: float  # current best kernel time, seconds
    trials: int = 0
    seconds: float = 0.0
    batches: int = 0
    stale: int = 0  # batches since the last improvement
    improved: bool = False  # it has a candidate, which is owed a final check of ``reserve`` trials
    done: bool = False

    def priority(self, decay: float) -> float:
        return self.weight * self.time * decay ** self.stale


class Allocator:
    """Split ``trials`` and/or ``seconds`` (None: no limit of that kind) across tasks.

    ``reserve`` trials per task are kept back from the time it could first improve, for
    the final head-to-head that decides acceptance, so the searches and those checks
    together stay within ``trials``; so are the seconds those trials will take (at the
    task's cost per trial so far) within ``seconds``. ``min_step`` is the smallest batch
    worth giving."""

    def __init__(self, trials: int | None = None, seconds: float | None = None, decay: float = 0.5,
                 reserve: int = 2, min_step: int = 2):
        if trials is None and seconds is None:
            raise ValueError("an Allocator needs a budget of trials or seconds")
        self.trials, self.seconds, self.decay = trials, seconds, decay
        self.reserve, self.min_step = reserve, min_step
        self.accounts: dict = {}

    def add(self, key, weight: float | None, time: float) -> None:
        self.accounts[key] = Account(weight or 1, time)

    def trials_left(self) -> int | None:
        """Trials not spent and not owed to a final check (None: no trial budget)."""
        if self.trials is None:
            return None
        owed = self.reserve * sum(a.improved for a in self.accounts.values())
        return self.trials - sum(a.trials for a in self.accounts.values()) - owed

    def seconds_spent_or_owed(self) -> float:
        """Seconds spent, and those the final checks owed will take."""
        return sum(a.seconds + (self.reserve * a.seconds / a.trials if a.improved and a.trials else 0)
                   for a in self.accounts.values())

    def next(self):
        """(key, trials that task may use now, None: no trial limit) for the next batch;
        None when the budget is spent or no task is open."""
        if self.seconds is not None and self.seconds_spent_or_owed() >= self.seconds:
            return None
        open_ = [(k, a) for k, a in self.accounts.items() if not a.done]
        if not open_:
            return None
        key, acc = max(open_, key=lambda ka: ka[1].priority(self.decay))  # ties: the first added
        left = self.trials_left()
        if left is None:
            return key, None
        limit = left - (0 if acc.improved else self.reserve)
        return (key, limit) if limit >= self.min_step else None

    def charge(self, key, trials: int, seconds: float, time: float | None, improved: bool, done: bool) -> None:
        """Book one batch of ``key``: its cost, the task's best time after it, whether it
        improved, and whether the task has nothing left to search."""
        a = self.accounts[key]
        a.trials += trials
        a.seconds += seconds
        a.batches += 1
        if time is not None:
            a.time = time
        a.stale = 0 if improved else a.stale + 1
        a.improved = a.improved or improved
        a.done = done


def heaviest(tasks, share: float) -> list[str]:
    """Names of the tasks with the largest weight x chosen kernel time, the largest first,
    until they cover ``share`` of the sum (tasks with no kernel time are left out)."""
    cost = {t.task: t.weight * us for t in tasks if (us := t.refined_us or t.transferred_us or t.untuned_us)}
    total, out, covered = sum(cost.values()), [], 0.0
    for name, c in sorted(cost.items(), key=lambda x: -x[1]):
        if covered >= share * total:
            break
        out.append(name)
        covered += c
    return out
