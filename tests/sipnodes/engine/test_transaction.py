"""RFC 3261 §17 transactions on a fake clock: timers are asserted, never slept."""

from sipnodes.engine.message import Response, Via, parse
from sipnodes.engine.sipmsg import Peer, make_request, make_response, new_branch
from sipnodes.engine.timers import Scheduler
from sipnodes.engine.transaction import (
    T1,
    T2,
    T4,
    TIMER_B,
    TIMER_F,
    TIMER_H,
    TIMER_J,
    Kind,
    State,
    TransactionLayer,
)

UDP = Peer("UDP", "127.0.0.1", 6000)
TCP = Peer("TCP", "127.0.0.1", 6000)


class TU:
    def __init__(self):
        self.responses = []
        self.timeouts = []

    def on_response(self, tx, response, now):
        self.responses.append((response.code, now))

    def on_timeout(self, tx, now):
        self.timeouts.append((tx.kind, now))


def setup():
    sched = Scheduler()
    outbox = []
    tu = TU()
    return sched, outbox, tu, TransactionLayer(sched, outbox, tu)


def request(method="INVITE", branch=None):
    return make_request(
        method,
        "sip:101@127.0.0.1:6000",
        via=Via("UDP", "127.0.0.1", 5060, {"branch": branch or new_branch()}),
        from_="<sip:100@x>;tag=a",
        to="<sip:101@x>",
        call_id="c1",
        cseq=1,
    )


def reply(req, code, tag="t"):
    return parse(bytes(make_response(req, code, to_tag=tag)))


def run_until(sched, end):
    """Fire timers one by one up to `end`, returning the times they fired."""
    times = []
    while (d := sched.next_deadline()) is not None and d <= end:
        sched.run_due(d)
        times.append(d)
    return times


def test_invite_client_timer_a_doubles_and_timer_b_times_out():
    sched, outbox, tu, layer = setup()
    tx = layer.send_request(request(), UDP, 0.0)
    assert tx.kind is Kind.ICT and tx.state is State.CALLING
    assert len(outbox) == 1
    assert sched.next_deadline() == T1  # Timer A
    run_until(sched, TIMER_B)
    # A fires at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5: six retransmissions before B at 32 s.
    assert len(outbox) == 7
    assert tu.timeouts == [(Kind.ICT, TIMER_B)]
    assert tx.state is State.TERMINATED and not layer.client


def test_invite_client_provisional_stops_retransmission_and_acks_error():
    sched, outbox, tu, layer = setup()
    req = request()
    tx = layer.send_request(req, UDP, 0.0)
    layer.receive_response(reply(req, 180), 0.1)
    assert tx.state is State.PROCEEDING
    assert sched.next_deadline() is None  # no A, no B in Proceeding
    layer.receive_response(reply(req, 486), 5.0)
    assert tx.state is State.COMPLETED
    ack = parse(outbox[-1].data)
    assert ack.method == "ACK" and ack.headers["Via"] == req.headers["Via"]
    assert ack.cseq.method == "ACK" and "tag=t" in ack.headers["To"]
    # Retransmitted final: ACK again, TU not told twice.
    layer.receive_response(reply(req, 486), 5.5)
    assert [c for c, _ in tu.responses] == [180, 486]
    assert parse(outbox[-1].data).method == "ACK"
    assert sched.next_deadline() == 5.0 + 32.0  # Timer D
    run_until(sched, 40)
    assert tx.state is State.TERMINATED


def test_invite_client_2xx_goes_accepted_and_passes_retransmissions():
    sched, outbox, tu, layer = setup()
    req = request()
    tx = layer.send_request(req, UDP, 0.0)
    layer.receive_response(reply(req, 200), 0.2)
    assert tx.state is State.ACCEPTED
    layer.receive_response(reply(req, 200), 0.7)
    assert [c for c, _ in tu.responses] == [200, 200]  # TU re-sends its ACK
    assert sched.next_deadline() == 0.2 + 64 * T1  # Timer M


def test_non_invite_client_timer_e_caps_at_t2_and_timer_f():
    sched, outbox, tu, layer = setup()
    layer.send_request(request("BYE"), UDP, 0.0)
    times = run_until(sched, TIMER_F)
    intervals = [b - a for a, b in zip([0.0] + times, times, strict=False)]
    assert intervals[:4] == [T1, 2 * T1, 4 * T1, T2]
    assert max(intervals[:-1]) == T2
    assert tu.timeouts == [(Kind.NICT, TIMER_F)]


def test_non_invite_client_final_then_timer_k():
    sched, outbox, tu, layer = setup()
    req = request("BYE")
    tx = layer.send_request(req, UDP, 0.0)
    layer.receive_response(reply(req, 200), 0.1)
    assert tx.state is State.COMPLETED and sched.next_deadline() == 0.1 + T4
    run_until(sched, 10)
    assert tx.state is State.TERMINATED


def test_reliable_transport_does_not_retransmit():
    sched, outbox, tu, layer = setup()
    layer.send_request(request("BYE"), TCP, 0.0)
    assert sched.next_deadline() == TIMER_F  # no Timer E over TCP


def test_invite_server_retransmits_error_until_ack_then_timer_i():
    sched, outbox, tu, layer = setup()
    req = request()
    tx, new = layer.receive_request(req, UDP, 0.0)
    assert new and tx.kind is Kind.IST and tx.state is State.PROCEEDING
    tx.respond(make_response(req, 100), 0.0)
    # Retransmitted INVITE: the last provisional again, not the TU.
    again, new = layer.receive_request(parse(bytes(req)), UDP, 0.1)
    assert again is None and not new and len(outbox) == 2
    tx.respond(make_response(req, 486, to_tag="x"), 0.2)
    assert tx.state is State.COMPLETED
    assert sched.next_deadline() == 0.2 + T1  # Timer G
    run_until(sched, 0.2 + T1 + 2 * T1)
    assert len(outbox) == 5  # 100, 100 again, 486, two Timer G retransmissions
    ack = request("ACK", branch=req.via[0].parameters["branch"])
    assert layer.receive_request(ack, UDP, 2.0) == (None, False)
    assert tx.state is State.CONFIRMED
    assert sched.next_deadline() == 2.0 + T4  # Timer I
    run_until(sched, 10)
    assert tx.state is State.TERMINATED and not layer.server


def test_invite_server_timer_h_without_ack():
    sched, outbox, tu, layer = setup()
    req = request()
    tx, _ = layer.receive_request(req, UDP, 0.0)
    tx.respond(make_response(req, 404, to_tag="x"), 0.0)
    run_until(sched, TIMER_H)
    assert tx.state is State.TERMINATED


def test_invite_server_2xx_retransmitted_until_tu_reports_ack():
    sched, outbox, tu, layer = setup()
    req = request()
    tx, _ = layer.receive_request(req, UDP, 0.0)
    tx.respond(make_response(req, 200, to_tag="x"), 0.0)
    assert tx.state is State.ACCEPTED
    run_until(sched, 1.6)
    assert len(outbox) == 3  # 200 at 0, 0.5, 1.5
    tx.receive_ack(1.6)
    run_until(sched, 10)
    assert len(outbox) == 3 and not tu.timeouts


def test_invite_server_2xx_never_acked_times_out_to_tu():
    sched, outbox, tu, layer = setup()
    req = request()
    tx, _ = layer.receive_request(req, UDP, 0.0)
    tx.respond(make_response(req, 200, to_tag="x"), 0.0)
    run_until(sched, 64 * T1)
    assert tu.timeouts == [(Kind.IST, 64 * T1)]


def test_non_invite_server_absorbs_retransmissions_until_timer_j():
    sched, outbox, tu, layer = setup()
    req = request("OPTIONS")
    tx, new = layer.receive_request(req, UDP, 0.0)
    assert tx.state is State.TRYING
    assert tx.respond(make_response(req, 200), 0.0)
    assert tx.state is State.COMPLETED
    assert layer.receive_request(parse(bytes(req)), UDP, 1.0) == (None, False)
    assert len(outbox) == 2  # the response was sent again
    assert not tx.respond(make_response(req, 500), 1.0)  # no second final
    assert outbox[1].data == outbox[0].data and outbox[1].peer == outbox[0].peer
    assert run_until(sched, 64 * T1) == [TIMER_J]
    assert len(layer) == 0  # Terminated: nothing is kept
    again, new = layer.receive_request(parse(bytes(req)), UDP, 64 * T1)
    assert new and again is not tx  # a late copy now starts a new transaction


def test_completed_non_invite_transactions_all_end_on_one_timer():
    sched, outbox, tu, layer = setup()
    for i in range(100):
        req = request("REGISTER")
        tx, _ = layer.receive_request(req, UDP, i * 0.01)
        tx.respond(make_response(req, 200), i * 0.01)
    assert len(layer.completed) == 100 and len(sched) == 1
    run_until(sched, TIMER_J + 0.495)
    assert len(layer.completed) == 50  # each ended TIMER_J after its own response
    run_until(sched, TIMER_J + 1)
    assert len(layer) == 0 and len(sched) == 0


def test_cancel_finds_its_invite_transaction():
    sched, outbox, tu, layer = setup()
    req = request()
    tx, _ = layer.receive_request(req, UDP, 0.0)
    cancel = request("CANCEL", branch=req.via[0].parameters["branch"])
    ctx, new = layer.receive_request(cancel, UDP, 0.1)
    assert new and ctx is not tx
    assert layer.find_invite_server(cancel) is tx


def test_stray_response_is_not_matched():
    sched, outbox, tu, layer = setup()
    assert not layer.receive_response(reply(request(), 200), 0.0)
    assert isinstance(reply(request(), 200), Response)
