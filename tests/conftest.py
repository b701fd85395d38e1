import pytest

from sipnodes.models import SipHost
from tests.factories import make_member, make_tenant_with_server


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
