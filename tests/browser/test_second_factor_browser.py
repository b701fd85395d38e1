"""An operator's first login to the admin in a browser: password, authenticator set-up from
the page's key, recovery codes shown once, then the admin; all under the portal's CSP."""

import base64

import pytest
from django_otp.oath import totp

from tenants.models import User

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "operator secret 42"


def test_an_operator_sets_up_the_second_factor_at_the_first_login(page, live_server):
    User.objects.create_superuser(username="op", email="op@example.com", password=PASSWORD)
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else 0)

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.get_by_label("E-mail address").fill("op@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    page.get_by_role("heading", name="Set up your authenticator").wait_for()
    qr_code = page.locator("#totp-qr-code svg")
    assert qr_code.bounding_box()["width"] >= 100  # drawn, big enough to scan
    page.screenshot(path="var/second-factor-enrol.png", full_page=True)
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    page.get_by_label("One-time code").fill(f"{totp(key):06d}")
    page.get_by_role("button", name="Confirm").click()

    page.get_by_text("Your authenticator is set up.").wait_for()
    codes = page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) == 10
    page.screenshot(path="var/second-factor-recovery-codes.png", full_page=True)
    page.get_by_role("link", name="I have written them down: continue").click()
    page.get_by_role("heading", name="Site administration").wait_for()
    assert refused == []
