import pytest

from sipnodes.engine.cdr import (
    STATUS_TO_CAUSE,
    CallTag,
    cause_for_status,
    q850_cause,
    release_cause,
    web_phone_closed,
)
from sipnodes.engine.events import CdrData
from tests.factories import sample_cdr


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (200, 16),
        (404, 1),
        (486, 17),
        (480, 18),
        (403, 21),
        (603, 21),
        (408, 102),
        (484, 28),
        (503, 41),
        (500, 41),
        (502, 38),
        (600, 17),
        (604, 1),
        (487, 127),
        (499, 31),
        (599, 41),
        (699, 31),
    ],
)
def test_status_to_cause_table(status, cause):
    assert cause_for_status(status) == cause


def test_table_values_are_q850_causes():
    assert all(1 <= c <= 127 for c in STATUS_TO_CAUSE.values())


def test_reason_header_from_callee_side_wins_on_4xx_5xx():
    assert release_cause(486, ['Q.850;cause=17;text="busy"']) == 17
    assert release_cause(480, ["Q.850;cause=19"]) == 19
    assert release_cause(503, ["SIP;cause=503, Q.850 ; cause = 34"]) == 34
    assert release_cause(486, ["SIP;cause=600"]) == 17  # no Q.850: the table
    assert release_cause(486, ["Q.850;cause=999"]) == 17  # not a Q.850 value
    assert q850_cause([]) is None


def test_every_call_tag_is_documented():
    values = [int(t) for t in CallTag]
    assert len(values) == len(set(values))
    assert CallTag.CALLER_BYE == 1
    for tag in CallTag:
        assert tag.__doc__ and tag.__doc__ != CallTag.__doc__


def test_cdr_data_is_the_event_payload_with_times_in_epoch_seconds():
    cdr = sample_cdr(start=1000.0, ring=1001.0, answer=1002.0, release=1012.5)
    assert cdr.data() == CdrData(
        uuid=cdr.uuid,
        call_id=cdr.call_id,
        caller="100",
        dialed="101",
        callee="101",
        route="local_user",
        start=1000.0,
        ring=1001.0,
        answer=1002.0,
        release=1012.5,
        talk_seconds=10.5,
        released_by="caller",
        status=200,
        call_tag=1,
        cause=16,
        fci="callTag=1;cause=16",
        answered=True,
    )
    assert type(cdr.data().call_tag) is int  # the number, not the CallTag member


def test_an_unanswered_cdr_has_no_answer_time_and_no_talk_time():
    data = sample_cdr(answered=False).data()
    assert (data.answer, data.talk_seconds, data.answered) == (None, 0.0, False)
    assert (data.call_tag, data.cause, data.fci) == (4, 17, "callTag=4;cause=17")


def test_only_the_web_phone_gateways_reason_means_its_page_closed():
    assert web_phone_closed(['sipcloud;cause=1;text="web phone closed"'])
    assert web_phone_closed(["Q.850;cause=16, SIPcloud ; cause = 1"])
    assert not web_phone_closed(["Q.850;cause=16", "SIP;cause=200", "sipcloud;cause=10"])
    assert not web_phone_closed([])
