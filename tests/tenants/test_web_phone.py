"""The web phone's pages and endpoints: who may open and use a session, CSRF, and the
choice of local user from the server page. The calls themselves are in
tests/browser/test_web_phone_browser.py (a real gateway, worker and Chromium)."""

import pytest
import redis
from django.test import Client
from django.urls import reverse

from sipnodes.webphone import channels
from tests.factories import make_member
from tests.sipnodes.node_host import EVENTS_REDIS_URL

pytestmark = pytest.mark.django_db


@pytest.fixture
def events_redis(settings):
    settings.REDIS_URL = EVENTS_REDIS_URL
    client = redis.Redis.from_url(EVENTS_REDIS_URL)
    yield client
    client.close()


def a_session(events_redis, server_id: int, member_id: int) -> str:
    """A session in Redis as `webphone_open` leaves it (no gateway needed to check access)."""
    session_id = channels.new_id()
    key = channels.session_key(session_id)
    events_redis.hset(key, mapping={"server": server_id, "number": "100", "member": member_id})
    events_redis.expire(key, 60)
    return session_id


def test_the_server_page_links_to_the_web_phone_with_a_choice_of_user(owner_client, tenant_a):
    html = owner_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert 'id="web-phone-link"' in html
    assert reverse("tenants:web-phone", args=[tenant_a.server.pk]) in html
    assert f'<option value="{tenant_a.user.pk}">100</option>' in html


def test_the_page_offers_the_users_then_opens_the_phone_of_one(owner_client, tenant_a):
    url = reverse("tenants:web-phone", args=[tenant_a.server.pk])
    choose = owner_client.get(url).content.decode()
    assert 'id="web-phone-choose"' in choose and 'id="web-phone"' not in choose
    phone = owner_client.get(url, {"user": tenant_a.user.pk}).content.decode()
    assert 'id="web-phone"' in phone and "portal/web_phone.js" in phone
    assert "<script>" not in phone  # no inline script: the CSP allows our files only
    assert 'data-t-registered="Registered as 100: ready."' in phone


def test_another_tenants_user_is_not_found_through_our_server(client, tenant_a, tenant_b):
    client.force_login(make_member(tenant_a.tenant, "owner"))
    page = reverse("tenants:web-phone", args=[tenant_a.server.pk])
    assert client.get(page, {"user": tenant_b.user.pk}).status_code == 404
    opened = reverse("tenants:web-phone-open", args=[tenant_a.server.pk])
    assert client.post(opened, {"user": tenant_b.user.pk}).status_code == 404
    theirs = reverse("tenants:web-phone-open", args=[tenant_b.server.pk])
    assert client.post(theirs, {"user": tenant_b.user.pk}).status_code == 404


@pytest.mark.parametrize("owner", ["other tenant", "other member"])
def test_a_session_is_only_its_members(client, tenant_a, tenant_b, events_redis, owner):
    me = make_member(tenant_a.tenant, "admin")
    if owner == "other tenant":
        server, member = tenant_b.server, make_member(tenant_b.tenant, "owner")
    else:
        server, member = tenant_a.server, make_member(tenant_a.tenant, "owner")
    session_id = a_session(events_redis, server.pk, member.pk)
    client.force_login(me)
    action = reverse("tenants:web-phone-action", args=[server.pk, session_id])
    assert client.post(action, {"action": "hangup"}).status_code == 404
    events = reverse("tenants:web-phone-events", args=[server.pk, session_id])
    assert client.get(events).status_code == 404
    # and through our own server's URL, the session of another server is missing too
    mine = reverse("tenants:web-phone-action", args=[tenant_a.server.pk, session_id])
    assert client.post(mine, {"action": "hangup"}).status_code == 404
    assert events_redis.llen(channels.requests_key(server.pk)) == 0  # nothing reached it


def test_viewers_get_neither_the_link_nor_the_phone(viewer_client, tenant_a):
    html = viewer_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert 'id="web-phone-link"' not in html
    url = reverse("tenants:web-phone", args=[tenant_a.server.pk])
    assert viewer_client.get(url, {"user": tenant_a.user.pk}).status_code == 403
    opened = reverse("tenants:web-phone-open", args=[tenant_a.server.pk])
    assert viewer_client.post(opened, {"user": tenant_a.user.pk}).status_code == 403


def test_an_unknown_action_is_refused_before_the_gateway(client, tenant_a, events_redis):
    me = make_member(tenant_a.tenant, "admin")
    session_id = a_session(events_redis, tenant_a.server.pk, me.pk)
    client.force_login(me)
    action = reverse("tenants:web-phone-action", args=[tenant_a.server.pk, session_id])
    assert client.post(action, {"action": "open", "number": "100"}).status_code == 404
    assert client.post(action, {"action": "reboot"}).status_code == 404
    assert events_redis.llen(channels.requests_key(tenant_a.server.pk)) == 0


def test_csrf_is_enforced_on_every_post(tenant_a, events_redis):
    me = make_member(tenant_a.tenant, "owner")
    session_id = a_session(events_redis, tenant_a.server.pk, me.pk)
    client = Client(enforce_csrf_checks=True)
    client.force_login(me)
    opened = reverse("tenants:web-phone-open", args=[tenant_a.server.pk])
    assert client.post(opened, {"user": tenant_a.user.pk}).status_code == 403
    action = reverse("tenants:web-phone-action", args=[tenant_a.server.pk, session_id])
    assert client.post(action, {"action": "hangup"}).status_code == 403
    assert events_redis.llen(channels.requests_key(tenant_a.server.pk)) == 0


def test_anonymous_visitors_are_sent_to_log_in(client, tenant_a):
    url = reverse("tenants:web-phone", args=[tenant_a.server.pk])
    assert client.get(url).status_code == 302
    opened = reverse("tenants:web-phone-open", args=[tenant_a.server.pk])
    assert client.post(opened, {"user": tenant_a.user.pk}).status_code == 302
