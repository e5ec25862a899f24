"""The droplet budget allocator: trials go where weight x kernel time is, follow the
search's progress, and never exceed the budget (final checks included)."""

from __future__ import annotations

import pytest

from schedb.search.allocate import Allocator


def _run(alloc: Allocator, outcome, step: int = 5) -> list:
    """Drive ``alloc`` like schedb.search.droplet.spend: each pick spends ``min(step, limit)``
    trials and ``outcome(key, n) -> (new time or None, improved, done)`` says what the
    n-th batch of that task found. -> the keys in the order picked."""
    order = []
    while (pick := alloc.next()) is not None:
        key, limit = pick
        order.append(key)
        n = order.count(key)
        alloc.charge(key, step if limit is None else min(step, limit), 1.0, *outcome(key, n))
    return order


def test_the_heaviest_task_gets_the_budget_until_it_stops_improving():
    alloc = Allocator(trials=100)
    alloc.add("big", 10, 1e-3)  # 10 occurrences of a 1 ms kernel: 10 ms of the model
    alloc.add("small", 1, 1e-3)
    order = _run(alloc, lambda k, n: (None, False, False))  # nothing ever improves
    # Halving per batch without a gain: after 4 stale batches the big one (10 / 16) ranks
    # below the fresh small one (1), then they share by their decayed priorities.
    assert order[:4] == ["big"] * 4 and order[4] == "small"
    assert alloc.accounts["big"].trials > alloc.accounts["small"].trials
    assert sum(a.trials for a in alloc.accounts.values()) <= 100


def test_estimates_follow_the_search():
    alloc = Allocator(trials=60)
    alloc.add("a", 1, 4e-3)
    alloc.add("b", 1, 3e-3)

    def found(key, n):  # a's first batch makes it 4x faster: b now holds most of the time
        return (1e-3, True, False) if key == "a" and n == 1 else (None, False, False)

    order = _run(alloc, found)
    assert order[:2] == ["a", "b"]
    assert alloc.accounts["a"].time == 1e-3 and alloc.accounts["b"].trials > alloc.accounts["a"].trials


def test_exhausted_tasks_stop_and_the_final_checks_fit_in_the_budget():
    alloc = Allocator(trials=40, reserve=2)
    alloc.add("done_soon", 100, 1e-3)
    alloc.add("improves", 1, 1e-3)
    order = _run(alloc, lambda k, n: (None, k == "improves", k == "done_soon"))
    assert order.count("done_soon") == 1  # its neighbourhood ran out after one batch
    spent = sum(a.trials for a in alloc.accounts.values())
    assert alloc.accounts["improves"].improved and spent + 2 <= 40  # its head-to-head still fits
    assert alloc.next() is None


def test_a_seconds_budget_and_no_budget():
    alloc = Allocator(seconds=3.0)
    alloc.add("a", 1, 1e-3)
    assert len(_run(alloc, lambda k, n: (None, True, False))) == 3  # each batch charged 1 s
    with pytest.raises(ValueError):
        Allocator()


def test_a_seconds_budget_keeps_back_the_time_of_the_final_checks():
    """Batches of 2 trials in 1 s: a task that improved owes a 2-trial head-to-head, about
    1 s, so it gets 2 batches of a 3 s budget; one that never improved owes nothing."""
    improving, flat = Allocator(seconds=3.0, reserve=2), Allocator(seconds=3.0, reserve=2)
    improving.add("a", 1, 1e-3)
    flat.add("a", 1, 1e-3)
    assert len(_run(improving, lambda k, n: (None, True, False), step=2)) == 2
    assert len(_run(flat, lambda k, n: (None, False, False), step=2)) == 3
