"""Changing a server's edition: the service, and the operator's page that drives it."""

import datetime

import pytest
import redis
from django.contrib.auth.models import Permission
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from sipnodes import services
from sipnodes.models import PortAllocation, SipHost, VirtualServer
from sipnodes.ports import media_block_size
from sipnodes.runtime_config import needs_restart, render_runtime_config
from tenants.models import Tenant, User
from tests.factories import make_member, make_tenant_with_server
from tests.second_factor import verified_login
from tests.sipnodes.engine.processes import cleanup_server
from tests.sipnodes.node_host import EVENTS_REDIS_URL
from tests.support import options_ping, wait_until

PAID = timezone.localdate() + datetime.timedelta(days=30)
OVER_LIMIT = (
    "12 clients are registered now; they stay registered until they unregister or their "
    "registration expires; no new client can register until fewer than 10 are registered."
)


def media_ports(server: VirtualServer) -> list[int]:
    return sorted(
        PortAllocation.objects.filter(server=server, purpose="media").values_list("port", flat=True)
    )


def fixed_ports(server: VirtualServer) -> tuple[int, int]:
    return server.sip_port, server.callback_port


def reload(server: VirtualServer) -> VirtualServer:
    return VirtualServer.objects.select_related("host").get(pk=server.pk)


# ---- the service ---------------------------------------------------------------------------


def test_an_upgrade_grows_the_media_block_in_place_and_keeps_the_sip_ports(tenant_a):
    server = tenant_a.server
    sip_ports, first = fixed_ports(server), server.media_port_first

    change = services.server_change_edition(server=server, edition=10, paid_until=PAID)

    server = reload(server)
    assert (server.edition, server.paid_until) == (10, PAID)
    assert fixed_ports(server) == sip_ports
    assert (server.media_port_first, server.media_port_last) == (first, first + 39)
    assert media_ports(server) == list(range(first, first + 40))
    assert (
        change.consequences[0] == f"Media ports {first}-{first + 19} grow to {first}-{first + 39}."
    )
    assert not change.limit_reached


def test_a_block_that_cannot_grow_in_place_moves_to_a_free_range(tenant_a, tenant_b):
    server, neighbour = tenant_a.server, tenant_b.server
    assert neighbour.media_port_first == server.media_port_last + 1
    sip_ports = fixed_ports(server)

    change = services.server_change_edition(server=server, edition=10, paid_until=PAID)

    server = reload(server)
    assert fixed_ports(server) == sip_ports
    assert server.media_port_first == neighbour.media_port_last + 1
    assert media_ports(server) == list(range(server.media_port_first, server.media_port_last + 1))
    assert len(media_ports(server)) == media_block_size(10)
    assert media_ports(reload(neighbour)) == list(range(neighbour.media_port_first, 20040))
    assert "move to" in change.consequences[0]


def test_a_downgrade_shrinks_the_block_and_frees_its_ports(host):
    tenant = Tenant.objects.create(name="t")
    server = services.server_create(tenant=tenant, name="big", edition=20)
    first = server.media_port_first
    services.server_change_edition(server=server, edition=10, paid_until=PAID)

    server = reload(server)
    assert media_ports(server) == list(range(first, first + 40))
    # The freed ports go to the next server that needs them.
    other = services.server_create(tenant=tenant, name="next")
    assert other.media_port_first == first + 40


def test_a_downgrade_below_the_clients_registered_now_says_what_will_happen(tenant_a):
    server = tenant_a.server
    services.server_change_edition(server=server, edition=20, paid_until=PAID)
    VirtualServer.objects.filter(pk=server.pk).update(registered_clients=12)

    change = services.server_change_edition(server=server, edition=10, paid_until=PAID)

    assert change.limit_reached
    assert change.consequences[-1] == OVER_LIMIT
    assert "without a restart" in change.consequences[1]
    assert reload(server).edition == 10  # the change is made, not refused


def test_a_host_without_room_refuses_the_upgrade_and_changes_nothing(db):
    SipHost.objects.create(
        name="tiny", public_address="127.0.0.1", media_port_min=20000, media_port_max=20029
    )
    server = make_tenant_with_server("t").server
    with pytest.raises(services.EditionChangeRefused, match="no free block of 40 media ports"):
        services.server_change_edition(server=server, edition=10, paid_until=PAID)
    server = reload(server)
    assert (server.edition, server.media_port_last) == (5, 20019)
    assert media_ports(server) == list(range(20000, 20020))


@pytest.mark.parametrize(
    "edition, paid_until, message",
    [
        (15, PAID, "there is no 15-client edition"),
        (10, None, "a paid edition needs the date it is paid until"),
        (5, PAID, "the free edition never expires"),
        (10, datetime.date(2020, 1, 1), "is in the past"),
    ],
)
def test_an_edition_must_be_one_of_the_list_and_paid_ones_carry_a_date(
    tenant_a, edition, paid_until, message
):
    with pytest.raises(services.EditionChangeRefused, match=message):
        services.server_change_edition(
            server=tenant_a.server, edition=edition, paid_until=paid_until
        )
    assert reload(tenant_a.server).edition == 5


def test_the_worker_gets_the_change_by_a_reload_not_a_restart(tenant_a, tmp_path):
    server = tenant_a.server
    old = render_runtime_config(server, redis_url="redis://", spool_dir=tmp_path)
    services.server_change_edition(server=server, edition=20, paid_until=PAID)
    new = render_runtime_config(reload(server), redis_url="redis://", spool_dir=tmp_path)

    assert (old["max_clients"], new["max_clients"]) == (5, 20)
    assert old["listen"]["media_ports"] != new["listen"]["media_ports"]
    assert not needs_restart(old, new)
    new["listen"]["sip_port"] += 1
    assert needs_restart(old, new)


def test_a_lapsed_edition_gives_back_its_media_ports(tenant_a):
    server = tenant_a.server
    services.server_change_edition(server=server, edition=50, paid_until=PAID)
    VirtualServer.objects.filter(pk=server.pk).update(paid_until=datetime.date(2026, 1, 31))
    assert services.lapse_paid_editions(today=datetime.date(2026, 2, 1)) == 1
    server = reload(server)
    assert (server.edition, server.paid_until) == (5, None)
    assert len(media_ports(server)) == media_block_size(5)


# ---- the operator's page ---------------------------------------------------------------------


def edition_url(server: VirtualServer) -> str:
    return reverse("admin:sipnodes_virtualserver_edition", args=[server.pk])


def test_the_server_page_links_to_the_edition_page(operator_client, tenant_a):
    url = reverse("admin:sipnodes_virtualserver_change", args=[tenant_a.server.pk])
    html = operator_client.get(url).content.decode()
    assert f'href="{edition_url(tenant_a.server)}"' in html


def test_the_operator_sees_what_will_change_then_changes_the_edition(operator_client, tenant_a):
    server = tenant_a.server
    first = server.media_port_first
    page = operator_client.get(edition_url(server)).content.decode()
    assert "0 of 5 clients registered" in page

    preview = operator_client.post(edition_url(server), {"edition": 10, "paid_until": PAID})
    html = preview.content.decode()
    assert f"Media ports {first}-{first + 19} grow to {first}-{first + 39}." in html
    assert 'name="_confirm"' in html
    assert reload(server).edition == 5  # a preview changes nothing

    done = operator_client.post(
        edition_url(server), {"edition": 10, "paid_until": PAID.isoformat(), "_confirm": "1"}
    )
    assert done.status_code == 302
    server = reload(server)
    assert (server.edition, server.paid_until, server.media_port_last) == (10, PAID, first + 39)
    html = operator_client.get(done.url).content.decode()
    assert "re-reads its limit of 10 clients without a restart" in html


def test_the_page_says_what_a_downgrade_below_the_registered_clients_does(
    operator_client, tenant_a
):
    server = tenant_a.server
    services.server_change_edition(server=server, edition=20, paid_until=PAID)
    VirtualServer.objects.filter(pk=server.pk).update(registered_clients=12)

    preview = operator_client.post(edition_url(server), {"edition": 10, "paid_until": PAID})
    assert OVER_LIMIT in preview.content.decode()

    done = operator_client.post(
        edition_url(server), {"edition": 10, "paid_until": PAID, "_confirm": "1"}, follow=True
    )
    assert reload(server).edition == 10
    [message] = list(done.context["messages"])
    assert message.level_tag == "warning" and OVER_LIMIT in message.message


def test_a_refused_change_is_explained_on_the_page(operator_client, tenant_a):
    response = operator_client.post(
        edition_url(tenant_a.server), {"edition": 10, "paid_until": "", "_confirm": "1"}
    )
    assert response.status_code == 200
    assert "a paid edition needs the date it is paid until" in response.content.decode()
    assert reload(tenant_a.server).edition == 5


def test_a_tenant_member_cannot_change_an_edition(client, tenant_a):
    client.force_login(make_member(tenant_a.tenant, "owner"))
    posted = {"edition": 500, "paid_until": PAID, "_confirm": "1"}
    response = client.post(edition_url(tenant_a.server), posted)
    assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))
    # Nor through the tenant's own settings page, which has no edition field.
    settings = reverse("tenants:server-settings", args=[tenant_a.server.pk])
    client.post(settings, {"name": "x", "out_group_prefix": "9", "prompt_language": "en", **posted})
    assert reload(tenant_a.server).edition == 5


def test_staff_without_the_change_permission_cannot_change_an_edition(tenant_a):
    staff = User.objects.create_user(
        username="s@example.com", email="s@example.com", password="x" * 12, is_staff=True
    )
    staff.user_permissions.add(Permission.objects.get(codename="view_virtualserver"))
    client = Client()
    verified_login(client, staff)
    url = edition_url(tenant_a.server)
    assert client.get(url).status_code == 403
    assert client.post(url, {"edition": 10, "paid_until": PAID, "_confirm": "1"}).status_code == 403
    assert reload(tenant_a.server).edition == 5


def test_the_edition_page_of_a_missing_server_is_404(operator_client, db):
    assert (
        operator_client.get(reverse("admin:sipnodes_virtualserver_edition", args=[0])).status_code
        == 404
    )


# ---- end to end: a real agent, supervisord and worker ---------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_upgrade_lets_a_sixth_client_in_without_restarting_the_worker(
    operator_client, node_host, sipp
):
    events = redis.Redis.from_url(EVENTS_REDIS_URL)
    with transaction.atomic():  # the worker starts once, with all six users
        server = services.server_create(tenant=Tenant.objects.create(name="t"), name="e2e")
        issued = [
            services.local_user_create(server=server, number=str(n))[1] for n in range(100, 106)
        ]
        # Ids repeat from one test database to the next: no events of an earlier run.
        cleanup_server(events, server.pk, str(server.uid))
    users = [(i.number, i.password) for i in issued]
    assert wait_until(lambda: options_ping(server.sip_port), 30), node_host.agent_log()[-3000:]
    rc, out = sipp.run("register.xml", server.sip_port, users[:5])
    assert rc == 0, out
    rc, out = sipp.run("register_refused.xml", server.sip_port, users[5:])
    assert rc == 0 and "403 Forbidden - client limit of 5 reached" in out, out
    pid = node_host.worker_pid(server.pk)

    posted = {"edition": 10, "paid_until": PAID, "_confirm": "1"}
    assert operator_client.post(edition_url(server), posted).status_code == 302

    def sixth_accepted() -> bool:
        return (
            sipp.run("register.xml", server.sip_port, users[5:], extra=["-timeout", "1s"])[0] == 0
        )

    assert wait_until(sixth_accepted, 15, 0.2), node_host.agent_log()[-3000:]
    assert node_host.worker_pid(server.pk) == pid
    cleanup_server(events, server.pk, str(server.uid))
