"""Reads scoped to the tenants a person belongs to: the one way views reach tenant objects.

An object of another tenant is indistinguishable from a missing one (404); a member
without the right to change gets 403.
"""

from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from sipnodes.models import (
    BranchNetwork,
    DialRule,
    HuntGroup,
    HuntGroupMember,
    LocalUser,
    Trunk,
    TrunkDid,
    VirtualServer,
)
from tenants.models import Membership, Tenant, User


def member_servers(user: User) -> QuerySet[VirtualServer]:
    return VirtualServer.objects.filter(tenant__memberships__user=user).select_related(
        "host", "tenant"
    )


def get_member_tenant(user: User) -> Tenant:
    """The tenant the member joined first (404 for people with none, such as operators)."""
    tenant = member_tenant(user)
    if tenant is None:
        raise Http404("no tenant")
    return tenant


def member_tenant(user: User) -> Tenant | None:
    """The tenant the member joined first: its zone is the clock of every page they see."""
    return (
        Tenant.objects.filter(memberships__user=user)
        .order_by("memberships__created_at", "memberships__pk")
        .first()
    )


def can_change_tenant(user: User, tenant: Tenant) -> bool:
    return Membership.objects.get(user=user, tenant=tenant).can_change


def membership(user: User, server: VirtualServer) -> Membership:
    return Membership.objects.get(user=user, tenant_id=server.tenant_id)


def get_member_server(user: User, pk: int, *, change: bool = False) -> VirtualServer:
    server = get_object_or_404(member_servers(user), pk=pk)
    if change and not membership(user, server).can_change:
        raise PermissionDenied("viewers cannot change this server")
    return server


def get_member_local_user(
    user: User, server_pk: int, pk: int, *, change: bool = False
) -> LocalUser:
    server = get_member_server(user, server_pk, change=change)
    return get_object_or_404(LocalUser.objects.select_related("server"), server=server, pk=pk)


def get_member_hunt_group(
    user: User, server_pk: int, pk: int, *, change: bool = False
) -> HuntGroup:
    server = get_member_server(user, server_pk, change=change)
    members = HuntGroupMember.objects.select_related("user").order_by("position")
    groups = HuntGroup.objects.select_related("server__host").prefetch_related(
        Prefetch("members", queryset=members)
    )
    return get_object_or_404(groups, server=server, pk=pk)


def get_member_trunk(user: User, server_pk: int, pk: int, *, change: bool = False) -> Trunk:
    server = get_member_server(user, server_pk, change=change)
    dids = TrunkDid.objects.select_related("user").order_by("number")
    trunks = Trunk.objects.select_related("server__host", "default_user").prefetch_related(
        Prefetch("dids", queryset=dids)
    )
    return get_object_or_404(trunks, server=server, pk=pk)


def get_member_dial_rule(user: User, server_pk: int, pk: int, *, change: bool = False) -> DialRule:
    server = get_member_server(user, server_pk, change=change)
    rules = DialRule.objects.select_related("server__host", "trunk")
    return get_object_or_404(rules, server=server, pk=pk)


def get_member_branch_network(user: User, pk: int, *, change: bool = False) -> BranchNetwork:
    """A branch network of one of the member's tenants (404 otherwise); 403 to change it
    for a viewer of that tenant."""
    networks = BranchNetwork.objects.filter(tenant__memberships__user=user).select_related(
        "tenant", "trunk_server"
    )
    network = get_object_or_404(networks, pk=pk)
    if change and not can_change_tenant(user, network.tenant):
        raise PermissionDenied("viewers cannot change this branch network")
    return network
