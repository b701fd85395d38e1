from sipnodes.engine.timers import COMPACT_FROM, Scheduler


def test_runs_due_timers_in_order_and_skips_cancelled():
    s = Scheduler()
    fired = []
    s.call_at(2.0, lambda now, x: fired.append((now, x)), "b")
    s.call_at(1.0, lambda now, x: fired.append((now, x)), "a")
    t = s.call_at(1.5, lambda now, x: fired.append((now, x)), "cancelled")
    t.cancel()
    assert s.next_deadline() == 1.0
    assert s.run_due(0.5) == 0
    assert s.run_due(2.0) == 2
    assert fired == [(2.0, "a"), (2.0, "b")]
    assert s.next_deadline() is None


def test_cancelled_timers_do_not_pile_up_until_their_deadline():
    s = Scheduler()
    keep = s.call_at(10_000.0, lambda now: None)
    for i in range(COMPACT_FROM * 4):
        s.call_at(3_600.0 + i, lambda now: None).cancel()  # a call's max duration, hung up
    assert len(s._heap) <= COMPACT_FROM + 1
    assert len(s) == 1 and s.next_deadline() == keep.when


def test_a_timer_that_cancels_many_others_while_firing_leaves_the_rest_in_order():
    s = Scheduler()
    fired = []
    doomed = [s.call_at(5_000.0 + i, fired.append) for i in range(COMPACT_FROM * 2)]
    s.call_at(1.0, lambda now: [t.cancel() for t in doomed])
    s.call_at(2.0, lambda now: fired.append(("late", now)))
    assert s.run_due(3.0) == 2
    assert fired == [("late", 3.0)] and len(s) == 0 and s.next_deadline() is None
