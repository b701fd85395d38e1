"""Password guessing on a fake clock: blocks per source and per user, never the real phone."""

import json

from sipnodes.engine.guard import FIRST_BLOCK, THRESHOLD, USER_THRESHOLD

from .helpers import T0, Pbx


def guess(phone, now, password="wrong"):
    """One REGISTER answering the challenge with `password`; the final code, or None."""
    phone.inbox.clear()
    try:
        return phone.register(now, password=password).code
    except (IndexError, AssertionError):
        return None  # no answer at all


def test_a_source_guessing_is_dropped_after_the_threshold_for_a_growing_time():
    s = Pbx(T0)
    attacker = s.phone("100", 7000, host="127.0.0.66")
    codes = [guess(attacker, T0 + i) for i in range(THRESHOLD)]
    assert codes == [403] * THRESHOLD
    assert guess(attacker, T0 + 10, password="pw100") is None  # even the right one: blocked
    assert guess(attacker, T0 + 10 + FIRST_BLOCK, password="pw100") == 200  # the block ended


def test_the_block_doubles_each_time():
    s = Pbx(T0)
    attacker = s.phone("100", 7000, host="127.0.0.66")
    for i in range(THRESHOLD):
        guess(attacker, T0 + i)
    first = s.engine.guard.sources["127.0.0.66"].until
    later = first + 1
    for i in range(THRESHOLD):
        guess(attacker, later + i)
    second = s.engine.guard.sources["127.0.0.66"].until
    assert first - (T0 + THRESHOLD - 1) == FIRST_BLOCK
    assert second - (later + THRESHOLD - 1) == 2 * FIRST_BLOCK


def test_a_phone_elsewhere_and_a_phone_that_logged_in_before_are_never_blocked():
    s = Pbx(T0)
    phone = s.registered("100", 6000)  # the real phone, from 127.0.0.1
    attacker = s.phone("100", 7000, host="127.0.0.66")
    for i in range(THRESHOLD + 3):
        guess(attacker, T0 + i)
    assert guess(phone, T0 + 10, password="pw100") == 200
    for i in range(THRESHOLD + 3):  # a mistyped password on the trusted phone
        assert guess(phone, T0 + 20 + i) == 403
    assert guess(phone, T0 + 40, password="pw100") == 200


def test_guessing_one_user_from_many_addresses_blocks_each_address_at_its_first_failure():
    s = Pbx(T0)
    for i in range(USER_THRESHOLD):
        guess(s.phone("101", 7000, host=f"127.0.1.{i + 1}"), T0 + i)
    late = s.phone("101", 7000, host="127.0.2.1")
    assert guess(late, T0 + 20) == 403
    assert guess(late, T0 + 21, password="pw101") is None  # blocked after one failure
    assert guess(s.phone("102", 6004), T0 + 22, "pw102") == 200  # other users, other sources


def test_the_block_list_names_source_user_and_end():
    s = Pbx(T0)
    attacker = s.phone("103", 7000, host="127.0.0.66")
    for i in range(THRESHOLD):
        guess(attacker, T0 + i)
    [entry] = json.loads(s.engine.guard.block_list(T0 + THRESHOLD))
    assert (entry["source"], entry["user"], entry["blocks"]) == ("127.0.0.66", "103", 1)
    assert entry["until"] == T0 + THRESHOLD - 1 + FIRST_BLOCK
    assert json.loads(s.engine.guard.block_list(T0 + 2 * FIRST_BLOCK)) == []
