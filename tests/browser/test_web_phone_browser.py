"""The web phone end to end: headless Chromium with fake media devices, the portal under
gunicorn, a real SIP host (supervisord, node agent, the server's worker, and the web phone
gateway it starts on demand), pjsua2 as the SIP phone at the other end, ingest writing
the CDRs. Nothing is mocked.

Chromium takes ICE candidates on loopback only with `--allow-loopback-in-peer-connection`;
the gateway offers the SIP host's public address (127.0.0.1 here), so all media stays on
loopback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import transaction

from sipnodes import services
from sipnodes.models import Cdr
from sipnodes.supervisor import webphone_program_name
from tenants.models import Tenant
from tests.browser.conftest import CHROMIUM_ARGS, launched_chromium
from tests.factories import make_member
from tests.interop.agents import Pjsua
from tests.portal import session_of
from tests.sipnodes.node_host import IngestProcess
from tests.support import free_port, options_ping, wait_for, wait_until

NUMBERS = ("100", "101", "102", "103", "104", "105", "106")
pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MEDIA_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
INBOUND = """async ([kind, field]) => {
  const phone = document.getElementById("web-phone").webPhone;
  if (!phone) return 0;
  let total = 0;
  (await phone.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === kind) total += s[field] || 0;
  });
  return total;
}"""
SCENARIOS = Path(__file__).parent / "sipp"


def inbound(page, kind: str = "audio", field: str = "packetsReceived") -> int:
    """What the page's peer connection received (`getStats()`), all streams of a kind."""
    return page.evaluate(INBOUND, [kind, field])


@pytest.fixture(scope="module")
def media_browser():
    yield from launched_chromium(CHROMIUM_ARGS + MEDIA_ARGS)


class Setup:
    """A tenant's server on the test host, its users' passwords, the member's cookie."""

    def __init__(self, node_host, portal, tmp_path: Path) -> None:
        self.users, self.passwords = {}, {}
        with transaction.atomic():  # the worker starts with every user: no reload to await
            self.tenant = Tenant.objects.create(name="Acme")
            self.server = services.server_create(tenant=self.tenant, name="Acme PBX")
            for number in NUMBERS:
                user, issued = services.local_user_create(server=self.server, number=number)
                self.users[number], self.passwords[number] = user, issued.password
        self.node_host, self.portal, self.tmp = node_host, portal, tmp_path
        ready = wait_until(lambda: options_ping(self.server.sip_port), 30, 0.2)
        assert ready, node_host.agent_log()
        self.cookie = session_of(make_member(self.tenant, "admin"))

    def page(self, browser, number: str = "100"):
        context = browser.new_context()
        context.add_cookies([{"name": "sessionid", "value": self.cookie, "url": self.portal.url}])
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{self.portal.url}/servers/{self.server.pk}/phone/?user={self.users[number].pk}")
        return page

    def pjsua(self, number: str) -> Pjsua:
        phone = Pjsua(self.tmp, number, "udp", self.server.sip_port)
        phone.password = self.passwords[number]
        phone.start()
        wait_for(lambda: phone.seen("registered", code=200), 15, f"pjsua {number} to register")
        return phone

    def gateway_state(self) -> str:
        info = self.node_host.supervisor.info(webphone_program_name(self.server.pk))
        return info.state if info else "NONE"

    def logs(self) -> str:
        """The worker's and the gateway's logs, for a failure's message."""
        worker = self.node_host.node.log_path(self.server.pk).read_text(errors="replace")
        return f"worker:\n{worker[-6000:]}\ngateway:\n{self.gateway_log()}"

    def gateway_log(self) -> str:
        path = self.node_host.node.webphone_log_path(self.server.pk)
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture
def setup(node_host, portal, tmp_path) -> Iterator[Setup]:
    ingest = IngestProcess(tmp_path)
    yield Setup(node_host, portal, tmp_path)
    ingest.stop()


def registered(page, setup: Setup, number: str = "100") -> None:
    """The page registered and its peer connection is up (the call button is enabled)."""
    ready = wait_until(lambda: not page.locator("#wp-call").is_disabled(), 30, 0.2)
    status = page.locator("#wp-status").inner_text()
    problem = page.locator("#wp-error").inner_text()
    assert ready and status == f"Registered as {number}: ready.", (
        f"status: {status!r}; error: {problem!r}\nagent:\n{setup.node_host.agent_log()[-3000:]}"
        f"\ngateway ({setup.gateway_state()}):\n{setup.gateway_log()}"
        f"\nportal:\n{setup.portal.log()[-3000:]}"
    )


def cdr_of(server, count: int) -> list[Cdr]:
    wait_for(lambda: Cdr.objects.filter(server=server).count() >= count, 20, "the CDRs")
    return list(Cdr.objects.filter(server=server).order_by("started_at"))


def test_the_web_phone_calls_a_sip_phone_media_flows_both_ways(media_browser, setup):
    callee = setup.pjsua("101")
    page = setup.page(media_browser)
    try:
        registered(page, setup)
        wait_for(lambda: setup.gateway_state() == "RUNNING", 10, "the gateway")  # on demand
        page.fill("#wp-number", "101")
        page.click("#wp-call")
        wait_for(callee.ringing, 15, "pjsua 101 to ring")
        page.locator('#web-phone[data-call="ringing"]').wait_for()
        callee.answer()
        page.locator('#web-phone[data-call="answered"]').wait_for()
        wait_for(lambda: inbound(page) > 25, 15, "RTP at the page")
        wait_for(lambda: callee.rtp().received > 25, 15, "RTP at pjsua")
        assert page.locator("#wp-duration").inner_text().startswith("00:")
        callee.hangup()
        page.locator('#web-phone[data-call="ended"]').wait_for()
        assert page.locator("#wp-call-state").inner_text() == "Call ended"
    finally:
        callee.stop()
        page.context.close()
    [cdr] = cdr_of(setup.server, 1)
    assert (cdr.caller, cdr.callee) == ("100", "101")
    assert cdr.fci.startswith("callTag=2;cause=16"), setup.logs()  # BYE from the callee


def test_a_sip_phone_calls_the_web_phone_which_rings_and_answers(media_browser, setup):
    caller = setup.pjsua("101")
    page = setup.page(media_browser)
    try:
        registered(page, setup)
        caller.dial("100")
        page.locator('#web-phone[data-ringing="true"]').wait_for()
        assert page.locator("#wp-call-state").inner_text() == "Incoming call"
        assert page.locator("#wp-peer").inner_text() == "101"
        page.click("#wp-answer")
        page.locator('#web-phone[data-call="answered"]').wait_for()
        assert page.locator('#web-phone[data-ringing="true"]').count() == 0
        wait_for(lambda: inbound(page) > 25, 15, "RTP at the page")
        wait_for(lambda: caller.rtp().received > 25, 15, "RTP at pjsua")
        page.click("#wp-hold")
        wait_for(lambda: caller.held_since(0), 10, "pjsua to be held")
        page.click("#wp-hold")  # resume
        page.click("#wp-mute")
        assert page.locator("#wp-mute").inner_text() == "Unmute"
        caller.hangup()
        page.locator('#web-phone[data-call="ended"]').wait_for()
    finally:
        caller.stop()
        page.context.close()
    [cdr] = cdr_of(setup.server, 1)
    assert (cdr.caller, cdr.callee) == ("101", "100")
    assert cdr.fci.startswith("callTag=1;cause=16"), cdr.fci  # BYE from the caller


def test_the_tab_closed_mid_call_ends_it_with_its_own_call_tag(media_browser, setup):
    callee = setup.pjsua("101")
    page = setup.page(media_browser)
    try:
        registered(page, setup)
        page.fill("#wp-number", "101")
        page.click("#wp-call")
        wait_for(callee.ringing, 15, "pjsua 101 to ring")
        callee.answer()
        page.locator('#web-phone[data-call="answered"]').wait_for()
        page.context.close()  # no goodbye from the page but its beacon, if it goes at all
        wait_for(callee.ended, 30, "the call to end at pjsua")
    finally:
        callee.stop()
    [cdr] = cdr_of(setup.server, 1)
    assert cdr.fci.startswith("callTag=19;"), cdr.fci
    # the last page gone, the gateway stops itself; supervisord leaves it stopped
    wait_for(lambda: setup.gateway_state() == "EXITED", 60, "the gateway to exit")


def test_a_second_tab_of_the_same_user_is_a_second_device(media_browser, setup):
    caller = setup.pjsua("101")
    first, second = setup.page(media_browser), setup.page(media_browser)
    try:
        registered(first, setup)
        registered(second, setup)
        caller.dial("100")
        first.locator('#web-phone[data-ringing="true"]').wait_for()
        second.locator('#web-phone[data-ringing="true"]').wait_for()
        second.click("#wp-answer")
        second.locator('#web-phone[data-call="answered"]').wait_for()
        first.locator('#web-phone[data-call="ended"]').wait_for()  # answered elsewhere
        wait_for(lambda: inbound(second) > 25, 15, "RTP at the second tab")
        second.click("#wp-hangup")
        wait_for(caller.ended, 15, "the call to end at pjsua")
    finally:
        caller.stop()
        first.context.close()
        second.context.close()


def test_a_gateway_crash_is_restarted_and_the_page_reconnects(media_browser, setup):
    page = setup.page(media_browser)
    try:
        registered(page, setup)
        pid = setup.node_host.supervisor.info(webphone_program_name(setup.server.pk)).pid
        os.kill(pid, 9)
        page.get_by_text("The web phone service restarted; reconnecting…").wait_for()
        page.get_by_text("Reconnected.").wait_for(timeout=30_000)
        new = setup.node_host.supervisor.info(webphone_program_name(setup.server.pk))
        assert new.state == "RUNNING" and new.pid != pid, setup.gateway_log()
        wait_for(lambda: not page.locator("#wp-call").is_disabled(), 20, "a new connection")
    finally:
        page.context.close()


def test_the_edition_limit_is_shown_when_reached(media_browser, setup, sipp):
    others = [(number, setup.passwords[number]) for number in NUMBERS[2:]]
    sipp.register(setup.server.sip_port, others)  # the free edition: 5 clients, all taken
    page = setup.page(media_browser)
    try:
        refusal = page.locator("#wp-error")
        refusal.wait_for()
        assert refusal.inner_text().startswith("The server refused to register 100: 403")
        assert "client limit of 5 reached" in refusal.inner_text()
    finally:
        page.context.close()


def test_video_both_ways_when_both_ends_offer_it(media_browser, setup, sipp):
    """The page (a fake camera) calls a SIPp callee that answers audio and VP8 and echoes
    both: the page receives its own video back through the gateway, the worker and SIPp,
    so video went both ways through the gateway, and decodes it."""
    uas_port = sipp.register(setup.server.sip_port, [("101", setup.passwords["101"])])
    echo = ["-rtp_echo", "-mp", str(free_port()), "-timeout", "60s"]
    uas = sipp.start_uas(str(SCENARIOS / "uas_answer_av.xml"), uas_port, echo)
    page = setup.page(media_browser)
    try:
        registered(page, setup)
        page.fill("#wp-number", "101")
        page.click("#wp-call")
        page.locator('#web-phone[data-call="answered"]').wait_for()
        wait_for(lambda: inbound(page, "video") > 50, 20, "video RTP at the page")
        wait_for(lambda: inbound(page, "video", "framesDecoded") > 5, 20, "video frames shown")
        wait_for(lambda: inbound(page) > 25, 15, "audio RTP at the page")
        page.click("#wp-hangup")
        page.locator('#web-phone[data-call="ended"]').wait_for()
        assert sipp.wait(uas) == 0, sipp.output(uas)
    finally:
        page.context.close()
