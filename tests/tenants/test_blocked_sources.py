"""The sources a worker blocks for guessing passwords, on the server page and the ops page."""

import json
import time

import pytest
import redis
from django.conf import settings
from django.urls import reverse

from sipnodes.engine.events import guard_key


@pytest.fixture
def block_list(tenant_a):
    """Writes the block list as the worker does; removes it afterwards."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    key = guard_key(str(tenant_a.server.uid))

    def write(*entries):
        client.set(key, json.dumps(list(entries)))

    yield write
    client.delete(key)
    client.close()


def entry(source, until, user="100"):
    return {"source": source, "until": until, "blocks": 2, "user": user, "checked": 10}


@pytest.mark.django_db
def test_the_server_page_lists_the_blocked_sources_still_in_force(
    owner_client, tenant_a, block_list
):
    url = reverse("tenants:server-detail", args=[tenant_a.server.pk])
    assert "No address is blocked" in owner_client.get(url).content.decode()
    block_list(entry("203.0.113.9", time.time() + 600), entry("198.51.100.7", time.time() - 5))
    html = owner_client.get(url).content.decode()
    assert "203.0.113.9" in html and "198.51.100.7" not in html  # the second one's block ended


@pytest.mark.django_db
def test_the_operator_servers_page_shows_each_servers_blocked_sources(
    operator_client, tenant_a, block_list
):
    block_list(entry("203.0.113.9", time.time() + 600, user="101"))
    html = operator_client.get(reverse("ops:servers")).content.decode()
    assert "203.0.113.9 (101," in html


@pytest.mark.django_db
def test_another_tenant_does_not_see_the_block_list(client, tenant_a, tenant_b, block_list):
    from tests.factories import make_member

    client.force_login(make_member(tenant_b.tenant, "owner"))
    block_list(entry("203.0.113.9", time.time() + 600))
    url = reverse("tenants:server-detail", args=[tenant_a.server.pk])
    assert client.get(url).status_code == 404
