"""The UPnP decisions and bookkeeping, sans-IO: no router, no clock."""

from hypothesis import given
from hypothesis import strategies as st

from sipnodes.upnp import plan
from sipnodes.upnp.plan import Decision, Mappings, ServerNeeds


def needs(server_id: int, edition: int = 5, *, relay: bool = True) -> ServerNeeds:
    first = 20000 + server_id * 1000
    return ServerNeeds(server_id, edition, 15000 + server_id, first, first + edition * 4 - 1, relay)


def test_a_small_server_maps_its_sip_port_and_whole_media_block_when_it_fits():
    [d] = plan.plan([needs(1)], 30)
    assert d.state == plan.MAPPED
    assert d.ports == (15001, *range(21000, 21020))
    assert (d.media_ports, d.calls) == (20, 5)


def test_an_edition_of_100_clients_or_more_maps_nothing():
    assert plan.plan([needs(1, 100), needs(2, 500)], 1000) == [
        Decision(1, plan.MANUAL),
        Decision(2, plan.MANUAL),
    ]


def test_the_next_server_maps_only_whole_calls_that_fit_and_the_one_after_none():
    first, second, third = plan.plan([needs(3), needs(1), needs(2)], 30)
    assert [d.server_id for d in (first, second, third)] == [1, 2, 3]  # oldest first
    assert len(first.ports) == 21
    assert (second.state, second.media_ports, second.calls) == (plan.MAPPED, 8, 2)
    assert second.ports == (15002, *range(22000, 22008))
    assert third == Decision(3, plan.NO_ROOM)


def test_no_room_for_one_call_is_no_mapping_at_all():
    """SIP alone with the relay on would register phones whose calls have no audio."""
    assert plan.plan([needs(1)], 4) == [Decision(1, plan.NO_ROOM)]
    assert plan.plan([needs(1)], 5)[0].calls == 1


def test_with_the_relay_off_only_the_sip_port_is_mapped():
    [d] = plan.plan([needs(1, relay=False)], 1)
    assert (d.state, d.ports, d.calls) == (plan.MAPPED, (15001,), 0)


@given(
    st.lists(st.tuples(st.sampled_from([5, 10, 20, 50, 100]), st.booleans()), max_size=12),
    st.integers(0, 200),
)
def test_never_more_mappings_than_the_router_takes_nor_partial_calls(servers, limit):
    decisions = plan.plan([needs(i, e, relay=r) for i, (e, r) in enumerate(servers)], limit)
    assert sum(len(d.ports) for d in decisions) <= limit
    for d in decisions:
        assert d.media_ports % plan.PORTS_PER_CALL == 0
        assert bool(d.ports) == (d.state == plan.MAPPED)


def test_mappings_adds_new_ports_at_once_and_all_of_them_at_each_renewal():
    m = Mappings(lease=600)
    decisions = plan.plan([needs(1)], 30)
    assert m.to_add(decisions, 0.0) == decisions
    m.added(1, decisions[0].ports)
    m.renewed(0.0)
    assert m.to_add(decisions, 299.0) == []
    more = plan.plan([needs(1), needs(2)], 60)
    assert [d.server_id for d in m.to_add(more, 299.0)] == [2]
    assert [d.server_id for d in m.to_add(more, 300.0)] == [1, 2]  # half the lease: renew


def test_mappings_removes_what_a_stopped_or_shrunk_server_no_longer_wants():
    m = Mappings(lease=600)
    both = plan.plan([needs(1), needs(2)], 60)
    for d in both:
        m.added(d.server_id, d.ports)
    assert m.to_remove(both) == []
    squeezed = plan.plan([needs(1)], 10)  # server 2 stopped; server 1 has room for 2 calls
    assert m.to_remove(squeezed) == sorted([*range(21008, 21020), *both[1].ports])


def test_descriptions_name_the_host_and_server_and_are_read_back():
    text = plan.description("branch-1", 42)
    assert plan.server_of("branch-1", text) == 42
    assert plan.server_of("branch-2", text) is None
    assert plan.server_of("branch-1", "sipcloud branch-1 vs-") is None
    assert plan.server_of("branch-1", "other LAN host") is None
