"""The call table: every (state, event) pair declared, an undeclared one refused loudly."""

import itertools

import pytest

from sipnodes.engine import calls
from sipnodes.engine.callmodel import CallEvent, CallState, Trigger
from sipnodes.engine.calls import B2BUA, CALL_TABLE, UnexpectedCallEvent


def test_every_state_and_event_pair_is_declared():
    missing = set(itertools.product(CallState, CallEvent)) - set(CALL_TABLE)
    assert missing == set()


def test_every_handler_is_a_method_of_the_b2bua():
    for handler, next_state in CALL_TABLE.values():
        assert getattr(B2BUA, handler.__name__) is handler
        assert isinstance(next_state, CallState)


def test_nothing_moves_a_released_call_back():
    for (state, _event), (_handler, next_state) in CALL_TABLE.items():
        if state is CallState.RELEASED:
            assert next_state is CallState.RELEASED


def test_an_undeclared_pair_is_an_error_not_a_no_op(monkeypatch):
    table = dict(CALL_TABLE)
    del table[(CallState.RINGING, CallEvent.CANCEL)]
    monkeypatch.setattr(calls, "CALL_TABLE", table)
    call = type("FakeCall", (), {"state": CallState.RINGING})()
    b2bua = B2BUA.__new__(B2BUA)  # _fire reads only the table and the call's state
    with pytest.raises(UnexpectedCallEvent, match="CANCEL in state RINGING"):
        b2bua._fire(call, CallEvent.CANCEL, 0.0, Trigger())
    assert call.state is CallState.RINGING
