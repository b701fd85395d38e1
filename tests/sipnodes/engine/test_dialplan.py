import pytest

from sipnodes.engine.config import DialRule
from sipnodes.engine.dialplan import DialPlan

from .helpers import make_config

USERS = make_config().users_by_number


def plan(*rules):
    return DialPlan(tuple(DialRule(**r) for r in rules), USERS)


def test_empty_plan_routes_local_users_and_refuses_the_rest():
    p = plan()
    assert p.route("101", 0).route == "local_user"
    d = p.route("555", 0)
    assert (d.status, d.cause) == (404, 1)


def test_longest_prefix_wins_and_strip_add():
    p = plan(
        {"prefix": "1", "route": "local_user"},
        {"prefix": "81", "route": "local_user", "strip": 2, "add": "10"},
        {"prefix": "8", "route": "sip_trunk"},
    )
    d = p.route("8102", 0)
    assert (d.route, d.number, d.refused) == ("local_user", "1002", True)  # 1002 is no user
    d = p.route("811", 0)
    assert (d.route, d.number, d.refused) == ("local_user", "101", False)
    assert p.route("899", 0).route == "sip_trunk"


@pytest.mark.parametrize("route", ["external_line", "sip_trunk"])
def test_routes_of_later_issues_answer_503_cause_34(route):
    d = plan({"prefix": "9", "route": route, "strip": 1}).route("912345", 5)
    assert (d.status, d.cause, d.number) == (503, 34, "12345")


def test_call_level_is_required():
    p = plan({"prefix": "10", "route": "local_user", "call_level": 3})
    assert p.route("101", 2).status == 403
    assert p.route("101", 2).cause == 21
    assert not p.route("101", 3).refused


def test_out_group_prefix_goes_to_the_external_line_by_default():
    p = DialPlan((), USERS, out_group_prefix="9")
    d = p.route("90123456", 0)
    assert (d.route, d.number, d.status, d.cause) == ("external_line", "0123456", 503, 34)
    assert p.route("9", 0).status == 404
    assert p.route("101", 0).route == "local_user"
