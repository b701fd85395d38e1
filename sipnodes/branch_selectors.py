"""Reads of a tenant's branch networks, for their pages and forms."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from sipnodes.models import BranchNetwork, BranchNetworkMember, VirtualServer
from tenants.models import Tenant


def tenant_servers(*, tenant: Tenant) -> QuerySet[VirtualServer]:
    """The servers a network of the tenant may name: its own, by name."""
    return VirtualServer.objects.filter(tenant=tenant).select_related("host").order_by("name", "pk")


def tenant_branch_networks(*, tenant: Tenant) -> QuerySet[BranchNetwork]:
    """The tenant's networks by name, each with its trunk server and branches (by prefix)."""
    members = BranchNetworkMember.objects.select_related("server__host").order_by("prefix")
    return (
        BranchNetwork.objects.filter(tenant=tenant)
        .select_related("trunk_server__host")
        .prefetch_related(Prefetch("members", queryset=members))
        .order_by("name")
    )


def network_prefixes(*, network: BranchNetwork) -> dict[int, str]:
    """Each branch server's prefix, by the server's id: what the network form shows."""
    return dict(network.members.values_list("server_id", "prefix"))
