"""A finished call leaves nothing behind in the worker: memory stays flat over many calls.

Run with the build the suite runs (`make test` compiles the engine first), so a reference
the compiled code forgets to release shows here, not as a worker that grows in a soak:
mypyc 1.19-1.20 leaked the left operand of every `bytes + bytes`, one serialized message
per send, about 12 KiB per call.
"""

from __future__ import annotations

import gc
import tracemalloc

from .helpers import T0, Pbx, Phone

CALLS = 300
# The transactions of a call are gone 32 s (64*T1) after it ends; step past that.
AFTERMATH = 40.0


def place_calls(pbx: Pbx, a: Phone, b: Phone, count: int, start: float) -> float:
    """`count` calls from `a` to `b`, each answered, then hung up by the caller."""
    now = start
    for i in range(count):
        call_id = f"mem-{start}-{i}"
        invite = a.dial("101", now, call_id=call_id, from_tag=f"a{i}")
        [binv] = [m for m in b.take() if getattr(m, "method", "") == "INVITE"]
        b.send(b.respond(binv, 200, f"b{i}"), now)
        ok = a.take()[-1]
        a.ack(ok, invite, now)
        b.take()
        bye = a.request(
            "BYE",
            str(ok.contact[0].uri),
            call_id=call_id,
            from_tag=f"a{i}",
            to=ok.headers["To"],
        )
        a.send(bye, now + 1)
        a.take()
        [bbye] = b.take()
        b.send(b.respond(bbye, 200), now + 1)
        now += 0.1
    end = now + AFTERMATH
    pbx.net.timer(end)
    pbx.engine.events.clear()
    return end


def test_memory_is_flat_over_many_calls():
    pbx = Pbx(T0)
    a, b = pbx.registered("100", 6000), pbx.registered("101", 6002)
    now = place_calls(pbx, a, b, 50, T0 + 1)  # warm-up: caches, free lists, the timer heap
    tracemalloc.start()
    try:
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        place_calls(pbx, a, b, CALLS, now)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not pbx.engine.b2bua.calls and not pbx.net.unrouted
    # What may stay: cancelled timers awaiting the next compaction of the heap.
    per_call = (after - before) / CALLS
    assert per_call < 500, f"{per_call:.0f} bytes kept per finished call"


def test_a_finished_call_leaves_no_reference_cycle():
    """The worker collects its older objects only every few minutes (`server.GC_FULL_EVERY`),
    so what a finished call leaves must go by reference counting, not wait for the GC."""
    pbx = Pbx(T0)
    a, b = pbx.registered("100", 6000), pbx.registered("101", 6002)
    now = place_calls(pbx, a, b, 5, T0 + 1)
    gc.collect()
    gc.disable()
    try:
        place_calls(pbx, a, b, 50, now)
        assert gc.collect() == 0
    finally:
        gc.enable()
