"""The operator pages: only staff see them; hosts, tenants and servers, the purge page."""

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ops import services
from ops.models import Exemption, PurgeRun
from sipnodes import services as sipnode_services
from sipnodes.models import SipHost, VirtualServer
from tests.factories import make_member
from tests.second_factor import verified_login

from .conftest import make_zombie

pytestmark = pytest.mark.django_db

PAGES = [
    ("ops:hosts", []),
    ("ops:tenants", []),
    ("ops:servers", []),
    ("ops:purge", []),
    ("ops:purge-run", [1]),
]


@pytest.fixture
def ops_client(client, operator) -> Client:
    verified_login(client, operator)
    return client


@pytest.mark.parametrize(("name", "args"), PAGES)
def test_only_operators_see_the_pages_anyone_else_gets_404(client, tenant_a, operator, name, args):
    PurgeRun.objects.create(pk=1, trigger="beat")
    url = reverse(name, args=args)
    assert client.get(url).status_code == 404  # not logged in
    client.force_login(make_member(tenant_a.tenant, "owner"))
    assert client.get(url).status_code == 404
    client.force_login(operator)  # the password alone: to the second factor first
    assert client.get(url).status_code == 302
    verified_login(client, operator)
    assert client.get(url).status_code == 200


@pytest.mark.parametrize(
    "name", ["ops:run-start", "ops:policy", "ops:exemption-add"], ids=lambda n: n
)
def test_a_member_cannot_post_to_the_purge(client, tenant_a, name):
    client.force_login(make_member(tenant_a.tenant, "owner"))
    assert client.post(reverse(name), {"dry_run": "0"}).status_code == 404
    assert not PurgeRun.objects.exists()


def test_the_hosts_page_shows_state_clients_and_free_ports(ops_client, tenant_a, tenant_b):
    SipHost.objects.update(last_seen_at=timezone.now())
    VirtualServer.objects.filter(pk=tenant_a.server.pk).update(
        actual_state="running", registered_clients=3, restart_count=2
    )
    VirtualServer.objects.filter(pk=tenant_b.server.pk).update(actual_state="failed")
    page = ops_client.get(reverse("ops:hosts")).content.decode()
    host = SipHost.objects.get()
    total = sum(len(r) for r in host.port_ranges().values())
    assert "Times on the operator pages are in UTC." in page
    assert "test-host" in page and "reachable" in page
    assert "Running: 1" in page and "Failed: 1" in page
    assert f"<td>{total - 44}</td>" in page
    assert "<td>3</td>" in page and "<td>2</td>" in page


def test_servers_are_searched_and_paged(ops_client, tenant_a):
    for n in range(55):
        sipnode_services.server_create(tenant=tenant_a.tenant, name=f"Fleet {n:02}")
    first = ops_client.get(reverse("ops:servers"), {"q": "fleet"}).content.decode()
    assert first.count("Fleet ") == 50 and "Fleet 54" in first and "Fleet 04" not in first
    after = first.split("after=")[1].split('"')[0]
    second = ops_client.get(reverse("ops:servers"), {"q": "fleet", "after": after})
    text = second.content.decode()
    assert text.count("Fleet ") == 5 and "Fleet 00" in text and "Next page" not in text
    port = tenant_a.server.sip_port
    by_port = ops_client.get(reverse("ops:servers"), {"q": str(port)}).content.decode()
    assert "Acme PBX" in by_port


def test_tenants_are_searched_by_name_or_member_email(ops_client, tenant_a, tenant_b):
    member = make_member(tenant_b.tenant, "admin")
    by_name = ops_client.get(reverse("ops:tenants"), {"q": "acm"}).content.decode()
    assert "Acme" in by_name and "Globex" not in by_name
    by_email = ops_client.get(reverse("ops:tenants"), {"q": member.email.upper()})
    assert "Globex" in by_email.content.decode()


def test_the_purge_page_lists_candidates_with_reasons_and_exemptions(ops_client, host, operator):
    make_zombie("Ghost")
    kept = make_zombie("Kept")
    ops_client.post(
        reverse("ops:exemption-add"),
        {"kind": "server", "object_id": kept.pk, "reason": "pilot customer"},
    )
    assert Exemption.objects.get().server == kept
    page = ops_client.get(reverse("ops:purge")).content.decode()
    candidates = page.split('id="candidates"')[1].split("</table>")[0]
    assert "Ghost PBX" in candidates and "Kept PBX" not in candidates
    assert "No activity for 730 days: last member login" in candidates
    assert "purge" in candidates
    exemptions = page.split('id="exemptions"')[1].split("</table>")[0]
    assert "Kept PBX" in exemptions and "pilot customer" in exemptions
    assert "1 server has had no activity for 730 days." in page


def test_dry_run_now_queues_the_task_and_shows_the_run(
    ops_client, host, django_capture_on_commit_callbacks
):
    make_zombie("Queued")
    with django_capture_on_commit_callbacks() as callbacks:
        response = ops_client.post(reverse("ops:run-start"), {"dry_run": "1"})
    run = PurgeRun.objects.get()
    assert response.url == run.get_absolute_url()
    assert (run.trigger, run.dry_run, run.state) == ("operator", True, "queued")
    assert len(callbacks) == 1  # the task, sent once the run is committed
    services.run_execute(run_id=run.pk)  # what the worker does with it
    page = ops_client.get(run.get_absolute_url()).content.decode()
    assert "1 candidates, 0 purged" in page and "Queued PBX" in page
