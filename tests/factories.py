"""Objects made through the same services the product uses."""

import itertools
from dataclasses import dataclass

from sipnodes import services as sipnode_services
from sipnodes.models import LocalUser, VirtualServer
from tenants.models import Membership, Tenant, User

_seq = itertools.count(1)


@dataclass
class TenantWithServer:
    tenant: Tenant
    server: VirtualServer
    user: LocalUser


def make_tenant_with_server(name: str) -> TenantWithServer:
    tenant = Tenant.objects.create(name=name)
    server = sipnode_services.server_create(tenant=tenant, name=f"{name} PBX")
    user, _ = sipnode_services.local_user_create(server=server, number="100")
    return TenantWithServer(tenant=tenant, server=server, user=user)


def make_member(tenant: Tenant, role: str) -> User:
    n = next(_seq)
    user = User.objects.create_user(
        username=f"member{n}@example.com", email=f"member{n}@example.com", password="x" * 12
    )
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user
