"""The live calls page in Chromium while SIPp makes a real call through a real worker: the
row goes black, blue, red and grey as the call is initiated, rings, is answered and ends.

Real supervisord, node agent and worker (tests/sipnodes/node_host.py), the portal under
gunicorn's ASGI worker (tests/portal.py), Redis pub/sub between them.
"""

from pathlib import Path

import pytest

from sipnodes import services
from tenants.models import Tenant
from tests.factories import make_member
from tests.portal import session_of
from tests.support import options_ping, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCENARIOS = Path(__file__).parent / "sipp"
COLOURS = {  # what the page's CSS names: black, blue, red, grey
    "initiated": "rgb(0, 0, 0)",
    "ringing": "rgb(0, 0, 255)",
    "answered": "rgb(255, 0, 0)",
    "released": "rgb(128, 128, 128)",
}


def test_a_real_call_colours_its_row_through_all_four_states(browser, node_host, portal, sipp):
    tenant = Tenant.objects.create(name="Acme")
    server = services.server_create(tenant=tenant, name="Acme PBX")
    passwords = {
        number: services.local_user_create(server=server, number=number)[1].password
        for number in ("100", "101")
    }
    assert wait_until(lambda: options_ping(server.sip_port), 30, 0.2), node_host.agent_log()
    uas_port = sipp.register(server.sip_port, [("101", passwords["101"])])
    uas = sipp.start_uas(str(SCENARIOS / "uas_slow_answer.xml"), uas_port)

    context = browser.new_context()
    context.add_cookies(
        [
            {
                "name": "sessionid",
                "value": session_of(make_member(tenant, "viewer")),
                "url": portal.url,
            }
        ]
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    # The page runs under the portal's Content-Security-Policy (config/settings/base.py): its
    # script and styles are its own files, and nothing on it is refused.
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    response = page.goto(f"{portal.url}/servers/{server.pk}/live/")
    assert "script-src 'self';" in response.headers["content-security-policy"] + ";"
    page.get_by_text("Live: changes appear as they happen.").wait_for()
    assert page.locator("#no-live-calls").is_visible()

    uac = sipp.start_uac(
        str(SCENARIOS / "uac_talk.xml"),
        server.sip_port,
        [("100", passwords["100"])],
        ["-s", "101"],
    )
    for state, colour in COLOURS.items():
        row = page.locator(f'#live-rows tr[data-state="{state}"]')
        row.wait_for()
        assert row.evaluate("row => getComputedStyle(row).color") == colour, state
        cells = row.locator("td").all_inner_texts()
        assert cells[:3] == ["100", "101", state]
        assert cells[3].startswith("00:0")  # elapsed, from the INVITE
    assert page.locator("#live-rows tr").count() == 1  # one call, one row
    assert not page.locator("#no-live-calls").is_visible()  # the ended call stays a while
    assert sipp.wait(uac) == 0 and sipp.wait(uas) == 0
    assert refused == []
    page.screenshot(path="var/live-calls-page.png", full_page=True)
    context.close()
