"""The call table: every (state, event) pair declared, an undeclared one refused loudly."""

import itertools

import pytest

from sipnodes.engine.callmodel import CallEvent, CallState
from sipnodes.engine.calls import B2BUA, CALL_TABLE, UnexpectedCallEvent, transition


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


def test_an_undeclared_pair_is_an_error_not_a_no_op():
    table = dict(CALL_TABLE)
    del table[(CallState.RINGING, CallEvent.CANCEL)]
    with pytest.raises(UnexpectedCallEvent, match="CANCEL in state RINGING"):
        transition(CallState.RINGING, CallEvent.CANCEL, table)
    assert (
        transition(CallState.RINGING, CallEvent.CANCEL)
        == CALL_TABLE[(CallState.RINGING, CallEvent.CANCEL)]
    )
