"""Zombies made through the product's own services, aged by moving their times back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from sipnodes.models import VirtualServer
from tenants.models import Tenant, User
from tests.factories import make_member, make_tenant_with_server
from tests.sipnodes.node_host import NodeHost, make_node_host

WINDOW = 730


def days_ago(days: float):
    return timezone.now() - timedelta(days=days)


def age(
    server: VirtualServer,
    *,
    created: float = WINDOW + 100,
    registered: float | None = None,
    called: float | None = None,
) -> VirtualServer:
    """Set when the server was created, and its last registration and call (days ago)."""
    VirtualServer.objects.filter(pk=server.pk).update(
        created_at=days_ago(created),
        last_registration_at=None if registered is None else days_ago(registered),
        last_call_at=None if called is None else days_ago(called),
    )
    server.refresh_from_db()
    return server


def member(tenant: Tenant, *, logged_in: float | None, role: str = "owner") -> User:
    """A member of the tenant whose last portal login was `logged_in` days ago (None: never)."""
    user = make_member(tenant, role)
    User.objects.filter(pk=user.pk).update(
        last_login=None if logged_in is None else days_ago(logged_in)
    )
    return user


def make_zombie(name: str, **activity: float | None) -> VirtualServer:
    """A tenant with an owner who last logged in 800 days ago and one server idle as long."""
    made = make_tenant_with_server(name)
    member(made.tenant, logged_in=activity.pop("logged_in", WINDOW + 70))
    activity.setdefault("registered", WINDOW + 80)
    activity.setdefault("called", WINDOW + 90)
    return age(made.server, **activity)


@pytest.fixture
def operator(db) -> User:
    return User.objects.create_superuser(
        username="ops@example.com", email="ops@example.com", password="x" * 12
    )


@pytest.fixture
def node_host(short_tmp: Path) -> Iterator[NodeHost]:
    """A started SIP host of the test's own, as in tests/sipnodes (transactional tests)."""
    node_host = make_node_host(short_tmp).start()
    yield node_host
    node_host.stop()
