"""Objects made through the same services and engine code the product uses."""

import dataclasses
import itertools
import uuid
from dataclasses import dataclass
from typing import Any

from sipnodes import services as sipnode_services
from sipnodes.engine.cdr import CallTag, Cdr
from sipnodes.engine.events import Event, make_event
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


SAMPLE_T0 = 1_790_000_000.0  # 2026-09-21, a fixed wall-clock time (UTC epoch seconds)


def sample_cdr(start: float = SAMPLE_T0, *, answered: bool = True, **changes: Any) -> Cdr:
    """A CDR as the engine writes it, with a fresh UUID and Call-ID.

    Answered: 100 calls 101, it rings after 0.2 s, is answered at 2 s and the
    caller hangs up at 32.6 s. Not answered: 101 is busy (486) at 3 s.
    `changes` replace any field of the engine's `Cdr`.
    """
    cdr = Cdr(
        uuid=str(uuid.uuid4()),
        call_id=f"{uuid.uuid4().hex}@127.0.0.1",
        caller="100",
        dialed="101",
        callee="101",
        route="local_user",
        start=start,
        ring=start + 0.2,
        answer=start + 2.0 if answered else None,
        release=start + 32.6 if answered else start + 3.0,
        released_by="caller" if answered else "callee",
        status=200 if answered else 486,
        call_tag=CallTag.CALLER_BYE if answered else CallTag.CALLEE_REJECTED,
        cause=16 if answered else 17,
    )
    return dataclasses.replace(cdr, **changes)


def sample_cdr_event(server_id: int, start: float = SAMPLE_T0, **changes: Any) -> Event:
    """The stream event of `sample_cdr(start, **changes)`, sent when the call was released."""
    cdr = sample_cdr(start, **changes)
    return make_event(cdr.data(), server_id, cdr.release)
