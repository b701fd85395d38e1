import re

import pytest

from sipnodes.models import VirtualServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_new_customer_signs_up_and_sees_the_server_and_three_users(page, live_server, host):
    page.goto(f"{live_server.url}/signup/")
    page.get_by_label("E-mail address").fill("grace@example.com")
    page.get_by_label("Password").fill("a long enough secret 7")
    page.get_by_label("Company name").fill("Hopper Navy Labs")
    page.get_by_label(re.compile("non-commercial use only")).check()
    page.get_by_role("button", name="Create my server").click()

    page.get_by_text("Your SIP server is ready").wait_for()
    server = VirtualServer.objects.get(tenant__name="Hopper Navy Labs")
    assert page.locator(".sip-address").inner_text() == f"127.0.0.1:{server.sip_port}"
    rows = page.locator("#issued-passwords tr").all_inner_texts()
    assert [row.split()[0] for row in rows[1:]] == ["100", "101", "102"]

    page.get_by_role("link", name="Go to my server").click()
    page.get_by_role("heading", name=server.name).wait_for()
    assert f"127.0.0.1:{server.sip_port}" in page.locator(".sip-address").inner_text()
    assert "0 of 5 clients registered" in page.locator("#clients").inner_text()
    numbers = page.locator("#local-users tr td:first-child").all_inner_texts()
    assert numbers == ["100", "101", "102"]
    page.screenshot(path="var/signup-server-page.png", full_page=True)


def test_signup_without_accepting_the_terms_shows_the_reason(page, live_server, host):
    page.goto(f"{live_server.url}/signup/")
    page.get_by_label("E-mail address").fill("linus@example.com")
    page.get_by_label("Password").fill("a long enough secret 7")
    page.get_by_label("Company name").fill("Kernel Co")
    page.get_by_role("button", name="Create my server").click()
    page.get_by_text("You must accept the free edition's non-commercial terms.").wait_for()
    assert not VirtualServer.objects.exists()
