import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from sipnodes.models import SipHost
from tenants.models import User
from tests.factories import make_member, make_tenant_with_server
from tests.portal import Portal
from tests.second_factor import verified_login


@pytest.fixture(autouse=True)
def fresh_throttle(settings) -> None:
    """Each test starts with no failed log-ins, signups or reset requests counted."""
    settings.SIPCLOUD_THROTTLE_KEY_PREFIX = f"sipcloud-test:{uuid.uuid4().hex}:throttle:"


@pytest.fixture
def host(db) -> SipHost:
    return SipHost.objects.create(
        name="test-host", public_address="127.0.0.1", listen_address="127.0.0.1"
    )


@pytest.fixture
def tenant_a(host):
    return make_tenant_with_server("Acme")


@pytest.fixture
def tenant_b(host):
    return make_tenant_with_server("Globex")


@pytest.fixture
def owner_client(client, tenant_a):
    client.force_login(make_member(tenant_a.tenant, "owner"))
    return client


@pytest.fixture
def viewer_client(client, tenant_a):
    client.force_login(make_member(tenant_a.tenant, "viewer"))
    return client


@pytest.fixture
def operator_client(db) -> Client:
    """A platform operator (staff) logged in to the admin with a second factor, beside any
    tenant's client."""
    operator = User.objects.create_superuser(
        username="op@example.com", email="op@example.com", password="x" * 12
    )
    client = Client()
    verified_login(client, operator)
    return client


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path, for supervisord's Unix sockets.

    A socket path must fit in 108 bytes (with supervisord's `.<pid>` suffix); pytest's
    `tmp_path` grows with its run counter and the test's name and can exceed that.
    """
    path = Path(tempfile.mkdtemp(prefix="sc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def portal(transactional_db, tmp_path) -> Iterator[Portal]:
    """The portal served by gunicorn's ASGI worker, as the platform runs it."""
    server = Portal(tmp_path)
    yield server
    server.stop()
