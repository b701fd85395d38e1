"""Signup to a running worker, config changes, crashes: real supervisord, agent and workers."""

import os
import re
import signal
import time

import pytest
from django.urls import reverse

from sipnodes.models import VirtualServer
from tests.sipnodes.node_host import IngestProcess, state_of
from tests.support import options_ping, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def signup(client) -> tuple[VirtualServer, dict[str, str]]:
    response = client.post(
        reverse("tenants:signup"),
        {
            "email": "e2e@example.com",
            "password": "a long enough secret 7",
            "company_name": "E2E Ltd",
            "accept_terms": "on",
        },
    )
    html = response.content.decode()
    passwords = dict(re.findall(r"<td>(\d+)</td><td class=\"secret\">([^<]+)</td>", html))
    server = VirtualServer.objects.get(tenant__name="E2E Ltd")
    assert f"127.0.0.1:{server.sip_port}" in html
    return server, passwords


def register(sipp, server, number, password, timeout=1.0) -> bool:
    rc, _ = sipp.run(
        "register.xml",
        server.sip_port,
        [(number, password)],
        timeout=timeout + 5,
        extra=["-timeout", f"{timeout}s"],
    )
    return rc == 0


def test_signup_to_first_accepted_register(client, node_host, sipp, capsys):
    started = time.monotonic()
    server, passwords = signup(client)
    accepted = wait_until(lambda: register(sipp, server, "100", passwords["100"]), 30, 0.1)
    elapsed = time.monotonic() - started
    assert accepted, node_host.agent_log()[-3000:]
    with capsys.disabled():
        print(f"\nsignup to first accepted REGISTER: {elapsed:.2f} s")

    assert wait_until(lambda: state_of(server) == "running", 10)
    page = client.get(server.get_absolute_url()).content.decode()
    assert '<span id="server-state">Running</span>' in page
    assert "is not reporting" not in page  # the agent's report marks its host alive
    assert not register(sipp, server, "100", "wrong-password")


def test_a_user_added_in_the_portal_registers_within_seconds_without_a_restart(
    client, node_host, sipp
):
    server, passwords = signup(client)
    assert wait_until(lambda: register(sipp, server, "100", passwords["100"]), 30, 0.1)
    pid = node_host.worker_pid(server.pk)

    response = client.post(
        reverse("tenants:user-create", args=[server.pk]),
        {"number": "200", "display_name": "New", "call_level": 1},
    )
    password = re.search(r'id="issued-password">([^<]+)<', response.content.decode()).group(1)
    started = time.monotonic()
    assert wait_until(lambda: register(sipp, server, "200", password), 15, 0.1)
    assert time.monotonic() - started < 10

    # The worker re-read its config (SIGHUP): same process, earlier registration kept.
    assert node_host.worker_pid(server.pk) == pid
    uas_port = sipp.register(server.sip_port, [("101", passwords["101"])])
    uas = sipp.start_uas("uas_answer.xml", uas_port)
    rc, out = sipp.run("uac_call.xml", server.sip_port, [("200", password)], extra=["-s", "101"])
    assert rc == 0 and sipp.wait(uas) == 0, out


@pytest.fixture
def ingest(tmp_path):
    process = IngestProcess(tmp_path)
    yield process
    process.stop()


def test_a_killed_worker_comes_back_and_its_clients_are_still_reachable(
    client, operator_client, node_host, sipp, ingest
):
    server, passwords = signup(client)
    assert wait_until(lambda: register(sipp, server, "100", passwords["100"]), 30, 0.1)
    uas_port = sipp.register(server.sip_port, [("101", passwords["101"])])
    pid = node_host.worker_pid(server.pk)

    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: node_host.worker_pid(server.pk) not in {0, pid}, 15)
    assert wait_until(lambda: options_ping(server.sip_port), 10)

    # 101 did not register again: its binding came back from Redis.
    uas = sipp.start_uas("uas_answer.xml", uas_port)
    rc, out = sipp.run(
        "uac_call.xml", server.sip_port, [("100", passwords["100"])], extra=["-s", "101"]
    )
    assert rc == 0 and sipp.wait(uas) == 0, out

    # The crash is counted, and shown to the tenant and to the operator.
    def restarts() -> int:
        server.refresh_from_db()
        return server.restart_count

    # (Ingest writes what arrives within about 2 s in one transaction: the call's CDR may
    # come one batch after the crash.)
    assert wait_until(lambda: restarts() == 1 and server.last_call_at is not None, 15), ingest.log()
    page = client.get(server.get_absolute_url()).content.decode()
    assert '<td id="restart-count">1</td>' in page
    operator_page = operator_client.get("/admin/sipnodes/virtualserver/").content.decode()
    assert '<td class="field-restart_count">1</td>' in operator_page
    assert server.registered_clients == 2 and server.last_call_at is not None


def test_start_stop_and_restart_buttons_drive_the_worker(client, node_host, sipp):
    server, passwords = signup(client)
    assert wait_until(lambda: options_ping(server.sip_port), 30)

    client.post(reverse("tenants:server-power", args=[server.pk, "stop"]))
    assert wait_until(lambda: state_of(server) == "stopped", 20)
    assert options_ping(server.sip_port) is None
    page = client.get(server.get_absolute_url()).content.decode()
    assert '<span id="server-state">Stopped</span> (wanted: stopped)' in page

    client.post(reverse("tenants:server-power", args=[server.pk, "start"]))
    assert wait_until(lambda: state_of(server) == "running", 20)
    assert options_ping(server.sip_port)

    pid = node_host.worker_pid(server.pk)
    client.post(reverse("tenants:server-power", args=[server.pk, "restart"]))
    assert wait_until(lambda: node_host.worker_pid(server.pk) not in {0, pid}, 20)
    assert wait_until(lambda: options_ping(server.sip_port), 10)
