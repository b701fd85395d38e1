"""Several SIP hosts on one machine, and the states an operator must be told about."""

import json
import socket

import pytest

from sipnodes import services
from sipnodes.models import SipHost
from sipnodes.node_agent import Node, apply_server, sync_host
from tenants.models import Tenant
from tests.sipnodes.node_host import make_node_host, state_of
from tests.support import options_ping, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def two_hosts(short_tmp):
    small = make_node_host(short_tmp, sip_ports=1, base=23000)
    big = make_node_host(short_tmp, sip_ports=20, base=24000)
    for host in (small, big):
        host.start()
    yield small, big
    for host in (small, big):
        host.stop()


def test_servers_go_to_a_host_with_room_and_each_host_runs_only_its_own(two_hosts):
    small, big = two_hosts
    tenant = Tenant.objects.create(name="t")
    first = services.server_create(tenant=tenant, name="first")
    second = services.server_create(tenant=tenant, name="second")
    third = services.server_create(tenant=tenant, name="third")
    assert first.host == small.host
    assert second.host == big.host and third.host == big.host

    for server in (first, second, third):
        assert wait_until(lambda s=server: state_of(s) == "running", 30), server.state_detail
        assert options_ping(server.sip_port)

    def programs(node_host) -> set[str]:
        return {i.name for i in node_host.supervisor.all_info() if i.name.startswith("vs-")}

    assert programs(small) == {f"vs-{first.pk}"}
    assert programs(big) == {f"vs-{second.pk}", f"vs-{third.pk}"}


def test_a_port_in_use_is_reported_and_nothing_is_left_behind(node_host):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.0.1", node_host.host.sip_port_min))
        server = services.server_create(tenant=Tenant.objects.create(name="t"), name="s")
        assert server.sip_port == node_host.host.sip_port_min
        assert wait_until(lambda: state_of(server) == "failed", 30)
        assert f"Port {server.sip_port}/udp is already in use" in server.state_detail
        assert not node_host.node.config_path(server.pk).exists()
        assert not node_host.node.program_path(server.pk).exists()
        assert node_host.supervisor.info(f"vs-{server.pk}") is None


def test_a_missing_supervisord_is_reported_and_nothing_is_left_behind(tmp_path):
    host = SipHost.objects.create(
        name="nosup", public_address="127.0.0.1", listen_address="127.0.0.1"
    )
    server = services.server_create(tenant=Tenant.objects.create(name="t"), name="s")
    node = Node(host_name="nosup", directory=tmp_path / "nosup")
    apply_server(node, server.pk)
    assert state_of(server) == "failed"
    assert "supervisord is not answering" in server.state_detail
    assert not node.config_path(server.pk).exists()
    assert not node.program_path(server.pk).exists()
    sync_host(node)
    host.refresh_from_db()
    assert host.last_seen_at is not None and "not answering" in host.status_detail


def test_a_worker_that_keeps_crashing_is_failed_with_its_last_log_lines(node_host):
    server = services.server_create(tenant=Tenant.objects.create(name="t"), name="s")
    assert wait_until(lambda: state_of(server) == "running", 30)
    config = node_host.node.config_path(server.pk)
    broken = json.loads(config.read_text())
    broken["users"] = [{"number": "100", "ha1_md5": "not-hex"}]
    config.write_text(json.dumps(broken))
    node_host.supervisor.stop(f"vs-{server.pk}")
    node_host.supervisor.start(f"vs-{server.pk}")
    assert wait_until(lambda: node_host.supervisor.info(f"vs-{server.pk}").state == "FATAL", 30)
    sync_host(node_host.node)
    assert state_of(server) == "failed"
    assert "keeps crashing" in server.state_detail
    assert "users[0].ha1_md5" in server.state_detail


def test_a_deleted_server_loses_its_program_and_worker(node_host):
    server = services.server_create(tenant=Tenant.objects.create(name="t"), name="s")
    assert wait_until(lambda: state_of(server) == "running", 30)
    server_id, port = server.pk, server.sip_port
    server.delete()
    sync_host(node_host.node)
    assert node_host.supervisor.info(f"vs-{server_id}") is None
    assert not node_host.node.program_path(server_id).exists()
    assert not node_host.node.config_path(server_id).exists()
    assert wait_until(lambda: options_ping(port) is None, 10)
