"""End to end: a branch network of three real workers, phones played by SIPp.

Branch A (prefix 8001) and branch B (prefix 8002) each have one trunk, to the trunk
server T; T has a trunk to each branch. These are the trunks and dial plan rules the
portal's branch network form makes. 100 at A dials 8002 + 101: the call goes A, T, B;
each server writes its CDR, and B sees the caller as 8001100, a number B can call back.
"""

from __future__ import annotations

import pytest

from .processes import REDIS_URL, WorkerProcess, cleanup_server, wait_events

pytestmark = pytest.mark.e2e


def trunk(trunk_id: int, port: int, inbound: str, caller_prefix: str = "") -> dict:
    return {
        "id": trunk_id,
        "name": f"trunk {trunk_id}",
        "address": "127.0.0.1",
        "port": port,
        "transport": "UDP",
        "registration": None,
        "caller_prefix": caller_prefix,
        "inbound": inbound,
    }


def route(prefix: str, trunk_id: int, strip: int = 0) -> dict:
    return {"prefix": prefix, "route": "sip_trunk", "trunk": trunk_id, "strip": strip}


@pytest.fixture
def network(tmp_path, redis_client):
    a, t, b = (WorkerProcess(tmp_path, REDIS_URL) for _ in range(3))
    a.write_config(trunks=[trunk(1, t.port, "local", "8001")], dial_plan=[route("8002", 1)])
    b.write_config(trunks=[trunk(1, t.port, "local", "8002")], dial_plan=[route("8001", 1)])
    t.write_config(
        trunks=[trunk(1, a.port, "transit"), trunk(2, b.port, "transit")],
        dial_plan=[route("8001", 1, strip=4), route("8002", 2, strip=4)],
    )
    workers = [a, t, b]
    try:
        for worker in workers:
            worker.start()
        assert [a.port, t.port, b.port] == [w.data["listen"]["sip_port"] for w in workers], (
            "a port moved at start: the trunks point at the old one"
        )
        yield a, t, b
    finally:
        for worker in workers:
            worker.stop()
            cleanup_server(redis_client, worker.server_id, worker.server_uid)


def test_a_branch_calls_another_branch_through_the_trunk_server(network, sipp, redis_client):
    a, t, b = network
    callee = sipp.start_uas("uas_answer.xml", sipp.register(b.port, [("101", "pw101")]))
    rc, out = sipp.run("uac_call.xml", a.port, [("100", "pw100")], extra=["-s", "8002101"])
    assert rc == 0 and sipp.wait(callee) == 0, out

    def cdr(worker):
        [found] = [e["data"] for e in wait_events(redis_client, worker.server_id, "cdr", 1, 10)]
        return found

    at_a, at_t, at_b = cdr(a), cdr(t), cdr(b)
    assert (at_a["caller"], at_a["dialed"], at_a["route"]) == ("100", "8002101", "sip_trunk")
    assert (at_t["caller"], at_t["dialed"], at_t["callee"]) == ("8001100", "8002101", "101")
    assert (at_b["caller"], at_b["callee"], at_b["answered"]) == ("8001100", "101", True)
    assert "trunk=1" in at_a["fci"] and "trunk=2" in at_t["fci"]


def test_the_called_branch_calls_back_on_the_number_it_was_shown(network, sipp, redis_client):
    a, t, b = network
    callee = sipp.start_uas("uas_answer.xml", sipp.register(a.port, [("100", "pw100")]))
    rc, out = sipp.run("uac_call.xml", b.port, [("101", "pw101")], extra=["-s", "8001100"])
    assert rc == 0 and sipp.wait(callee) == 0, out
    [at_a] = [e["data"] for e in wait_events(redis_client, a.server_id, "cdr", 1, 10)]
    assert (at_a["caller"], at_a["callee"], at_a["answered"]) == ("8002101", "100", True)
