"""Reads for the operator: who is a zombie and why, and the dashboards' pages.

`zombie_servers` is the one definition of a zombie (SPEC.md, "Zombie purge"); everything
else that lists or purges zombies starts from it.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db.models import Count, Exists, F, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils.translation import gettext as _

from config.timezones import zoned_datetime
from ops.models import (
    POLICY_ID,
    Exemption,
    ParkedServer,
    PolicyChange,
    PurgePolicy,
    PurgeRun,
    RunItem,
    Tombstone,
)
from sipnodes.engine.events import live_calls_key
from sipnodes.models import LAST_ACTIVITY, PortAllocation, SipHost, VirtualServer
from tenants.models import Membership, Tenant

PAGE_SIZE = 50


def policy_get() -> PurgePolicy:
    """The policy; its defaults until an operator first saves it."""
    return PurgePolicy.objects.filter(pk=POLICY_ID).first() or PurgePolicy(pk=POLICY_ID)


def _member_logins(cutoff: datetime) -> Exists:
    return Exists(
        Membership.objects.filter(tenant_id=OuterRef("tenant_id"), user__last_login__gte=cutoff)
    )


def last_member_login() -> Subquery:
    """The latest portal login of any member of the server's tenant."""
    return Subquery(
        Membership.objects.filter(tenant_id=OuterRef("tenant_id"))
        .values("tenant_id")
        .annotate(latest=Max("user__last_login"))
        .values("latest")[:1]
    )


def zombie_servers(*, inactivity_days: int, now: datetime) -> QuerySet[VirtualServer]:
    """Servers with no sign of life for the whole window: no member of the tenant logged in,
    no client registered and no call was carried since `now - inactivity_days`; a server
    created within the window is never one. Exempt servers and tenants are left out.

    The last registration, call and creation are one indexed expression
    (`vs_last_activity_idx`), so the query is a range scan in order of inactivity.
    """
    cutoff = now - timedelta(days=inactivity_days)
    # NOT EXISTS, not LEFT JOIN ... IS NULL: PostgreSQL estimates an anti-join well, and
    # keeps walking the index in order rather than starting from the tenants.
    return (
        VirtualServer.objects.alias(last_activity=LAST_ACTIVITY)
        .filter(last_activity__lt=cutoff)
        .filter(~_member_logins(cutoff))
        .filter(~Exists(Exemption.objects.filter(server_id=OuterRef("pk"))))
        .filter(~Exists(Exemption.objects.filter(tenant_id=OuterRef("tenant_id"))))
    )


def _parked() -> Exists:
    return Exists(
        ParkedServer.objects.filter(server_id=OuterRef("pk"), stage=ParkedServer.Stage.PARKED)
    )


@dataclass(frozen=True)
class Candidate:
    """A server the next run would act on, and the activity that makes it a zombie."""

    class Action:
        NOTICE = "notice"
        PARK = "park"
        PURGE = "purge"

    server_id: int
    server_name: str
    tenant_id: int
    tenant_name: str
    host_name: str
    sip_address: str
    action: str
    created_at: datetime
    last_login_at: datetime | None
    last_registration_at: datetime | None
    last_call_at: datetime | None
    inactivity_days: int
    parked_at: datetime | None = None

    @property
    def reason(self) -> str:
        def since(value: datetime | None) -> str:
            return zoned_datetime(value) if value else _("never")

        why = _(
            "No activity for %(days)s days: last member login %(login)s, last registration "
            "%(registration)s, last call %(call)s (created %(created)s)."
        ) % {
            "days": self.inactivity_days,
            "login": since(self.last_login_at),
            "registration": since(self.last_registration_at),
            "call": since(self.last_call_at),
            "created": zoned_datetime(self.created_at),
        }
        if self.parked_at is not None:
            why += " " + _("Parked since %(time)s.") % {"time": zoned_datetime(self.parked_at)}
        return why

    @property
    def action_label(self) -> str:
        return {
            self.Action.NOTICE: _("send notice"),
            self.Action.PARK: _("park"),
            self.Action.PURGE: _("purge"),
        }[self.action]


def _candidates(
    servers: QuerySet[VirtualServer], *, action: str, inactivity_days: int, limit: int
) -> list[Candidate]:
    rows = (
        servers.select_related("host", "tenant", "parking")
        .annotate(last_login_at=last_member_login())
        .order_by(LAST_ACTIVITY.asc())[:limit]  # no tie-break: it would defeat the index
    )
    parked = ParkedServer.Stage.PARKED
    return [
        Candidate(
            server_id=s.pk,
            server_name=s.name,
            tenant_id=s.tenant_id,
            tenant_name=s.tenant.name,
            host_name=s.host.name,
            sip_address=s.sip_address,
            action=action,
            created_at=s.created_at,
            last_login_at=s.last_login_at,
            last_registration_at=s.last_registration_at,
            last_call_at=s.last_call_at,
            inactivity_days=inactivity_days,
            parked_at=getattr(getattr(s, "parking", None), "parked_at", None)
            if getattr(getattr(s, "parking", None), "stage", None) == parked
            else None,
        )
        for s in rows
    ]


def _with_valid_notice(servers: QuerySet[VirtualServer]) -> QuerySet[VirtualServer]:
    """A notice counts when it was sent after the server's and its members' last activity."""
    return servers.annotate(
        notice_login=Coalesce(last_member_login(), F("created_at")),
    ).filter(
        zombie_notice__sent_at__gte=LAST_ACTIVITY,
        zombie_notice__sent_at__gt=F("notice_login"),
    )


def purge_candidates(*, policy: PurgePolicy, now: datetime, limit: int) -> list[Candidate]:
    """What the next run parks or purges, at most `limit`: parked servers whose grace period
    is over first, then the longest inactive. With a notice period, only zombies noticed
    that long ago; with a grace period, zombies not yet parked are parked first."""
    days = policy.inactivity_days
    zombies = zombie_servers(inactivity_days=days, now=now)
    # Read first: as a subquery, the planner walks every zombie to find the few parked.
    due_ids = list(
        ParkedServer.objects.filter(
            stage=ParkedServer.Stage.PARKED, purge_after__lte=now
        ).values_list("server_id", flat=True)
    )
    found = []
    if due_ids:
        due = zombies.filter(pk__in=due_ids)
        found = _candidates(due, action=Candidate.Action.PURGE, inactivity_days=days, limit=limit)
    if len(found) < limit:
        fresh = zombies.filter(~_parked())
        if policy.notice_days:
            fresh = _with_valid_notice(fresh).filter(
                zombie_notice__sent_at__lte=now - timedelta(days=policy.notice_days)
            )
        action = Candidate.Action.PARK if policy.grace_days else Candidate.Action.PURGE
        found += _candidates(fresh, action=action, inactivity_days=days, limit=limit - len(found))
    return found


def notice_candidates(*, policy: PurgePolicy, now: datetime, limit: int) -> list[Candidate]:
    """Servers that will be zombies within the notice period and have no notice for it."""
    if not policy.notice_days:
        return []
    days = max(policy.inactivity_days - policy.notice_days, 0)
    soon = zombie_servers(inactivity_days=days, now=now).filter(~_parked())
    unnoticed = soon.exclude(pk__in=_with_valid_notice(soon).values("pk"))
    return _candidates(unnoticed, action=Candidate.Action.NOTICE, inactivity_days=days, limit=limit)


def zombie_count(*, policy: PurgePolicy, now: datetime) -> int:
    return zombie_servers(inactivity_days=policy.inactivity_days, now=now).count()


def parked_servers() -> QuerySet[ParkedServer]:
    return ParkedServer.objects.select_related("server__tenant", "server__host").order_by(
        "purge_after", "pk"
    )


def runs(*, limit: int = 20) -> QuerySet[PurgeRun]:
    return PurgeRun.objects.select_related("started_by")[:limit]


def run_get(*, run_id: int) -> PurgeRun | None:
    return PurgeRun.objects.select_related("started_by").filter(pk=run_id).first()


def running_runs() -> QuerySet[PurgeRun]:
    return PurgeRun.objects.filter(state=PurgeRun.State.RUNNING)


def run_items(*, run: PurgeRun, limit: int = 500) -> QuerySet[RunItem]:
    return run.items.all()[:limit]


def run_item_counts(*, run: PurgeRun) -> dict[str, int]:
    return dict(Counter(run.items.values_list("outcome", flat=True)))


def policy_changes(*, limit: int = 20) -> QuerySet[PolicyChange]:
    return PolicyChange.objects.select_related("changed_by")[:limit]


def exemptions() -> QuerySet[Exemption]:
    return Exemption.objects.select_related("server__tenant", "tenant", "created_by")


def tombstones(*, limit: int = 50) -> QuerySet[Tombstone]:
    return Tombstone.objects.all()[:limit]


# Dashboards.


@dataclass(frozen=True)
class HostOverview:
    host: SipHost
    workers: dict[str, int]  # actual state -> number of servers
    restarts: int
    registered_clients: int
    calls_in_progress: int | None  # None: Redis did not answer
    free_ports: int


def hosts_overview() -> list[HostOverview]:
    """Each host with its workers by state, restarts, clients, calls and free ports.

    Calls in progress are the sizes of the running workers' live-call hashes in Redis,
    read in one pipeline.
    """
    hosts = list(SipHost.objects.order_by("name"))
    states: dict[int, dict[str, int]] = {host.pk: {} for host in hosts}
    for row in VirtualServer.objects.values("host_id", "actual_state").annotate(n=Count("pk")):
        states[row["host_id"]][row["actual_state"]] = row["n"]
    sums = {
        row["host_id"]: row
        for row in VirtualServer.objects.values("host_id").annotate(
            restarts=Sum("restart_count"), clients=Sum("registered_clients")
        )
    }
    used = dict(
        PortAllocation.objects.values("host_id").annotate(n=Count("pk")).values_list("host_id", "n")
    )
    calls = _calls_in_progress()
    labels = dict(VirtualServer.State.choices)
    return [
        HostOverview(
            host=host,
            workers={
                str(labels.get(state, state)): n for state, n in sorted(states[host.pk].items())
            },
            restarts=sums.get(host.pk, {}).get("restarts") or 0,
            registered_clients=sums.get(host.pk, {}).get("clients") or 0,
            calls_in_progress=None if calls is None else calls.get(host.pk, 0),
            free_ports=sum(len(r) for r in host.port_ranges().values()) - used.get(host.pk, 0),
        )
        for host in hosts
    ]


def _calls_in_progress() -> dict[int, int] | None:
    running = list(
        VirtualServer.objects.filter(actual_state=VirtualServer.State.RUNNING).values_list(
            "host_id", "uid"
        )
    )
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    try:
        pipe = client.pipeline(transaction=False)
        for _host_id, uid in running:
            pipe.hlen(live_calls_key(str(uid)))
        sizes = pipe.execute()
    except redis.RedisError:
        return None
    finally:
        client.close()
    calls: Counter[int] = Counter()
    for (host_id, _uid), size in zip(running, sizes, strict=True):
        calls[host_id] += size
    return dict(calls)


@dataclass(frozen=True)
class Page:
    """One page of a list in id order, newest first; `next_after` continues it."""

    rows: list
    next_after: int | None


def _keyset(queryset: QuerySet, after: int | None) -> Page:
    """Paging by id (keyset), not by offset: page 20,000 costs what page 1 costs."""
    if after is not None:
        queryset = queryset.filter(pk__lt=after)
    rows = list(queryset.order_by("-pk")[: PAGE_SIZE + 1])
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return Page(rows=rows, next_after=rows[-1].pk if more else None)


def servers_page(*, query: str = "", tenant_id: int | None = None, after: int | None) -> Page:
    """Servers whose name contains `query` (a trigram index serves it on PostgreSQL), or
    whose id, realm or SIP port is `query`."""
    servers = VirtualServer.objects.select_related("tenant", "host", "parking")
    if tenant_id is not None:
        servers = servers.filter(tenant_id=tenant_id)
    if query:
        match = Q(name__icontains=query) | Q(realm=query)
        if query.isdigit():
            match |= Q(pk=int(query)) | Q(sip_port=int(query))
        servers = servers.filter(match)
    return _keyset(servers, after)


def tenants_page(*, query: str = "", after: int | None) -> Page:
    """Tenants whose name contains `query` or with a member whose e-mail address is it."""
    tenants = Tenant.objects.all()
    if query:
        member = Membership.objects.filter(tenant_id=OuterRef("pk"), user__email__iexact=query)
        tenants = tenants.filter(Q(name__icontains=query) | Exists(member))
    page = _keyset(tenants, after)
    ids = [tenant.pk for tenant in page.rows]
    servers = dict(
        VirtualServer.objects.filter(tenant_id__in=ids)
        .values("tenant_id")
        .annotate(n=Count("pk"))
        .values_list("tenant_id", "n")
    )
    logins = dict(
        Membership.objects.filter(tenant_id__in=ids)
        .values("tenant_id")
        .annotate(latest=Max("user__last_login"))
        .values_list("tenant_id", "latest")
    )
    members = Counter(
        Membership.objects.filter(tenant_id__in=ids).values_list("tenant_id", flat=True)
    )
    for tenant in page.rows:
        tenant.server_count = servers.get(tenant.pk, 0)
        tenant.member_count = members.get(tenant.pk, 0)
        tenant.last_login = logins.get(tenant.pk)
    return page
