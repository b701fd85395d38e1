"""Operator tasks on the platform: bootstrap, and the zombie purge.

The purge, like Django's `clearsessions`, is one service (`run_execute`) that the
management command and the daily beat entry both call. For each zombie it:

1. asks the host's node agent to stop and remove the worker, and waits for the agent to
   report it stopped (`ParkedServer` marks the server meanwhile);
2. then, in one transaction holding the server's and the tenant's row locks, checks
   again that the server is still a zombie, and parks it (grace period) or purges it with
   `sipnodes.services.server_delete`, keeping a tombstone.

A server whose worker was not reported stopped is not deleted. A run killed at any point
leaves each server either untouched, held stopped (`ParkedServer` in stage "stopping",
finished or given back by the next run), or gone with its tombstone: nothing half-deleted,
nothing done twice.
"""

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import connection, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from config.timezones import zoned_datetime
from ops import selectors
from ops.models import (
    POLICY_ID,
    Exemption,
    ParkedServer,
    PolicyChange,
    PurgePolicy,
    PurgeRun,
    RunItem,
    Tombstone,
    ZombieNotice,
)
from ops.selectors import Candidate
from sipnodes import services as sipnode_services
from sipnodes.credentials import random_sip_password
from sipnodes.models import SipHost, VirtualServer
from tenants.models import Membership, Tenant, User

log = logging.getLogger(__name__)

OPERATOR_EMAIL = "operator@localhost"
POLICY_FIELDS = ("inactivity_days", "cap_per_run", "notice_days", "grace_days", "paused")
# Any number: the PostgreSQL advisory lock held by the one run in progress.
RUN_LOCK_KEY = 0x5A0B1E


@dataclass(frozen=True)
class Bootstrap:
    host: SipHost
    host_created: bool
    operator_email: str
    operator_password: str | None  # set only when the account was created just now


@transaction.atomic
def platform_bootstrap() -> Bootstrap:
    """Makes a fresh installation usable: one SIP host and one operator account."""
    host, host_created = SipHost.objects.get_or_create(
        name=settings.SIPCLOUD_DEFAULT_HOST_NAME,
        defaults={
            "public_address": settings.SIPCLOUD_DEFAULT_HOST_ADDRESS,
            "listen_address": settings.SIPCLOUD_DEFAULT_HOST_ADDRESS,
        },
    )
    User = get_user_model()
    operator = User.objects.filter(is_staff=True).order_by("pk").first()
    password = None
    if operator is None:
        password = random_sip_password(16)
        operator = User.objects.create_superuser(
            username=OPERATOR_EMAIL, email=OPERATOR_EMAIL, password=password
        )
    return Bootstrap(
        host=host,
        host_created=host_created,
        operator_email=operator.email,
        operator_password=password,
    )


# Policy and exemptions: every change is written to the policy's audit log.


@transaction.atomic
def policy_update(*, operator: User | None, **values: Any) -> PurgePolicy:
    unknown = set(values) - set(POLICY_FIELDS)
    if unknown:
        raise TypeError(f"not a policy setting: {', '.join(sorted(unknown))}")
    PurgePolicy.objects.get_or_create(pk=POLICY_ID)
    policy = PurgePolicy.objects.select_for_update().get(pk=POLICY_ID)
    for field, value in values.items():
        old = getattr(policy, field)
        if old != value:
            PolicyChange.objects.create(
                changed_by=operator, field=field, old_value=str(old), new_value=str(value)
            )
            setattr(policy, field, value)
    policy.full_clean()
    policy.save()
    return policy


@transaction.atomic
def exemption_add(
    *,
    operator: User | None,
    reason: str,
    server: VirtualServer | None = None,
    tenant: Tenant | None = None,
) -> Exemption:
    """Exempt a server or a tenant; what the purge holds of it (parked) is given back."""
    exemption = Exemption.objects.create(
        server=server, tenant=tenant, reason=reason, created_by=operator
    )
    PolicyChange.objects.create(
        changed_by=operator, field="exemption", old_value="", new_value=_exempted(exemption)
    )
    held = ParkedServer.objects.select_related("server__host")
    held = held.filter(server=server) if server is not None else held.filter(server__tenant=tenant)
    for parking in held:
        _restore(parking)
    return exemption


@transaction.atomic
def exemption_remove(*, operator: User | None, exemption: Exemption) -> None:
    PolicyChange.objects.create(
        changed_by=operator, field="exemption", old_value=_exempted(exemption), new_value=""
    )
    exemption.delete()


def _exempted(exemption: Exemption) -> str:
    if exemption.server is not None:
        return f"server {exemption.server.pk}"[:40]
    return f"tenant {exemption.tenant_id}"[:40]


# Runs.


@transaction.atomic
def run_queue(*, trigger: str, operator: User | None = None, dry_run: bool) -> PurgeRun:
    """A run for the task to execute; the operator's page shows it until it is done."""
    return PurgeRun.objects.create(trigger=trigger, started_by=operator, dry_run=dry_run)


@contextlib.contextmanager
def _run_lock() -> Iterator[bool]:
    """One run at a time. A PostgreSQL session lock goes with its connection, so a killed
    run never holds it; elsewhere (the embedded SQLite) runs are not serialised."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [RUN_LOCK_KEY])
        locked = bool(cursor.fetchone()[0])
    try:
        yield locked
    finally:
        if locked:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [RUN_LOCK_KEY])


def run_execute(*, run_id: int, limit: int | None = None) -> PurgeRun:
    """Execute a queued run (or finish one that was interrupted), acting on at most the
    policy's cap (or `limit`, if lower) of servers; a finished run is left as it is, so the
    task may be delivered twice."""
    with _run_lock() as locked:
        run = PurgeRun.objects.get(pk=run_id)
        if run.done:
            return run
        if not locked:
            if run.state == PurgeRun.State.RUNNING:
                return run  # delivered twice: the first delivery is executing it
            return _finish(run, PurgeRun.State.OVERLAPPED)
        # Holding the lock, no other run is alive: one still "running" was killed.
        selectors.running_runs().exclude(pk=run.pk).update(
            state=PurgeRun.State.INTERRUPTED, finished_at=timezone.now()
        )
        policy = selectors.policy_get()
        if run.started_at is None:  # a resumed run keeps the policy it started with
            run.started_at = timezone.now()
            run.inactivity_days = policy.inactivity_days
            run.cap = min(policy.cap_per_run, limit if limit is not None else policy.cap_per_run)
        run.state = PurgeRun.State.RUNNING
        run.save(update_fields=["state", "started_at", "inactivity_days", "cap"])
        policy.inactivity_days, policy.cap_per_run = run.inactivity_days, run.cap
        if run.dry_run:
            _dry_run(run, policy)
        elif policy.paused:
            return _finish(run, PurgeRun.State.PAUSED)
        else:
            _release_servers_no_longer_zombies(run, policy)
            _send_notices(run, policy)
            _park_or_purge(run, policy)
        return _finish(run, PurgeRun.State.FINISHED)


def _finish(run: PurgeRun, state: str) -> PurgeRun:
    counts = selectors.run_item_counts(run=run)
    Outcome = RunItem.Outcome
    run.candidates = sum(counts.values()) - counts.get(Outcome.NOTICED, 0)
    run.purged = counts.get(Outcome.PURGED, 0)
    run.parked = counts.get(Outcome.PARKED, 0)
    run.noticed = counts.get(Outcome.NOTICED, 0)
    run.skipped = counts.get(Outcome.SKIPPED, 0)
    run.errors = counts.get(Outcome.ERROR, 0)
    run.state = state
    run.finished_at = timezone.now()
    run.save()
    return run


def _item(run: PurgeRun, candidate: Candidate, outcome: str, reason: str) -> RunItem:
    return RunItem.objects.create(
        run=run,
        server_id=candidate.server_id,
        server_name=candidate.server_name,
        tenant_name=candidate.tenant_name,
        outcome=outcome,
        reason=reason,
    )


def _dry_run(run: PurgeRun, policy: PurgePolicy) -> None:
    """Report what a run would do now; nothing but the report is written."""
    now = timezone.now()
    verbs = {
        Candidate.Action.NOTICE: _("Would send a notice."),
        Candidate.Action.PARK: _("Would park."),
        Candidate.Action.PURGE: _("Would purge."),
    }
    found = selectors.notice_candidates(policy=policy, now=now, limit=policy.cap_per_run)
    found += selectors.purge_candidates(policy=policy, now=now, limit=policy.cap_per_run)
    RunItem.objects.bulk_create(
        RunItem(
            run=run,
            server_id=c.server_id,
            server_name=c.server_name,
            tenant_name=c.tenant_name,
            outcome=RunItem.Outcome.CANDIDATE,
            reason=f"{verbs[c.action]} {c.reason}",
        )
        for c in found
    )


def _already_done(run: PurgeRun) -> int:
    """What this run parked or purged before it was interrupted: it counts against the cap."""
    return run.items.filter(outcome__in=[RunItem.Outcome.PARKED, RunItem.Outcome.PURGED]).count()


def _park_or_purge(run: PurgeRun, policy: PurgePolicy) -> None:
    room = policy.cap_per_run - _already_done(run)
    if room <= 0:
        return
    candidates = selectors.purge_candidates(policy=policy, now=timezone.now(), limit=room)
    size = settings.SIPCLOUD_PURGE_STOP_BATCH
    for start in range(0, len(candidates), size):
        batch = candidates[start : start + size]
        stopped = _stop_workers(run, batch)
        for candidate in batch:
            if candidate.server_id not in stopped:
                _item(
                    run,
                    candidate,
                    RunItem.Outcome.SKIPPED,
                    _(
                        "Not deleted: host %(host)s did not report the worker stopped within "
                        "%(seconds)s seconds."
                    )
                    % {
                        "host": candidate.host_name,
                        "seconds": settings.SIPCLOUD_PURGE_STOP_TIMEOUT,
                    },
                )
                _give_back(candidate.server_id)
                continue
            try:
                _park_or_purge_one(run, policy, candidate)
            except Exception as exc:  # one server's failure must not stop the run
                log.exception("purge of server %s failed", candidate.server_id)
                _item(run, candidate, RunItem.Outcome.ERROR, f"{type(exc).__name__}: {exc}")


@transaction.atomic
def _hold(run: PurgeRun, batch: list[Candidate]) -> datetime:
    """Mark the servers held by the purge and ask their hosts to remove their workers."""
    asked_at = timezone.now()
    servers = list(
        VirtualServer.objects.select_related("host")
        .select_for_update(of=("self",))
        .filter(pk__in=[c.server_id for c in batch])
    )
    held = dict(ParkedServer.objects.filter(server__in=servers).values_list("server_id", "pk"))
    ParkedServer.objects.bulk_create(
        ParkedServer(
            server=server,
            run=run,
            stage=ParkedServer.Stage.STOPPING,
            stop_requested_at=asked_at,
            desired_state=server.desired_state,
            callback_was_open=server.callback_port > 0,
            sip_address=server.sip_address,
        )
        for server in servers
        if server.pk not in held
    )
    ParkedServer.objects.filter(pk__in=held.values()).update(stop_requested_at=asked_at, run=run)
    sipnode_services.servers_remove_workers(servers=servers)
    return asked_at


def _stop_workers(run: PurgeRun, batch: list[Candidate]) -> set[int]:
    """The servers of the batch whose hosts reported their workers stopped, in time."""
    asked_at = _hold(run, batch)
    wanted = {c.server_id for c in batch}
    deadline = time.monotonic() + settings.SIPCLOUD_PURGE_STOP_TIMEOUT
    while True:
        stopped = set(
            VirtualServer.objects.filter(
                pk__in=wanted,
                actual_state=VirtualServer.State.STOPPED,
                state_checked_at__gte=asked_at,
            ).values_list("pk", flat=True)
        )
        if stopped == wanted or time.monotonic() > deadline:
            return stopped
        time.sleep(0.2)


@transaction.atomic
def _park_or_purge_one(run: PurgeRun, policy: PurgePolicy, candidate: Candidate) -> RunItem:
    """The deleting transaction: under the server's and tenant's row locks, a login,
    registration or call that arrived since the server was chosen saves it."""
    server = (
        VirtualServer.objects.select_for_update(of=("self",))
        .select_related("host", "tenant")
        .filter(pk=candidate.server_id)
        .first()
    )
    if server is None:
        return _item(run, candidate, RunItem.Outcome.SKIPPED, _("Already gone."))
    Tenant.objects.select_for_update().filter(pk=server.tenant_id).exists()
    parking = ParkedServer.objects.filter(server=server).first()
    if parking is None:
        return _item(
            run, candidate, RunItem.Outcome.SKIPPED, _("Restored by a member's login meanwhile.")
        )
    now = timezone.now()
    saved_by = _activity_since(server, now - timedelta(days=policy.inactivity_days))
    if saved_by:
        _restore(parking)
        return _item(run, candidate, RunItem.Outcome.SKIPPED, saved_by)
    if candidate.action == Candidate.Action.PARK:
        sipnode_services.server_release_ports(server=server)
        parking.stage = ParkedServer.Stage.PARKED
        parking.parked_at = now
        parking.purge_after = now + timedelta(days=policy.grace_days)
        parking.save(update_fields=["stage", "parked_at", "purge_after"])
        return _item(
            run,
            candidate,
            RunItem.Outcome.PARKED,
            _("Parked until %(time)s. %(reason)s")
            % {"time": zoned_datetime(parking.purge_after), "reason": candidate.reason},
        )
    Tombstone.objects.create(
        server_uid=server.uid,
        server_id=server.pk,
        server_name=server.name,
        sip_address=parking.sip_address,
        host_name=server.host.name,
        tenant=server.tenant,
        tenant_name=server.tenant.name,
        run=run,
        purged_at=now,
        server_created_at=server.created_at,
        last_login_at=candidate.last_login_at,
        last_registration_at=server.last_registration_at,
        last_call_at=server.last_call_at,
    )
    sipnode_services.server_delete(server=server)
    return _item(run, candidate, RunItem.Outcome.PURGED, candidate.reason)


def _activity_since(server: VirtualServer, cutoff: datetime) -> str:
    """Why the server is no longer a zombie, read under the locks; empty if it still is."""
    if server.last_registration_at and server.last_registration_at >= cutoff:
        return _("Saved: a client registered at %(time)s.") % {
            "time": zoned_datetime(server.last_registration_at)
        }
    if server.last_call_at and server.last_call_at >= cutoff:
        return _("Saved: a call at %(time)s.") % {"time": zoned_datetime(server.last_call_at)}
    login = (
        Membership.objects.filter(tenant_id=server.tenant_id, user__last_login__gte=cutoff)
        .order_by("-user__last_login")
        .values_list("user__last_login", flat=True)
        .first()
    )
    if login:
        return _("Saved: a member logged in at %(time)s.") % {"time": zoned_datetime(login)}
    if (
        Exemption.objects.filter(server=server).exists()
        or Exemption.objects.filter(tenant_id=server.tenant_id).exists()
    ):
        return _("Saved: exempted.")
    return ""


@transaction.atomic
def _give_back(server_id: int) -> None:
    parking = ParkedServer.objects.select_related("server__host").filter(server_id=server_id)
    for held in parking.select_for_update(of=("self",)):
        _restore(held)


def _restore(parking: ParkedServer) -> VirtualServer | None:
    """Give a held or parked server back as it was: ports (new ones if it gave its own
    back), and its worker in the state it was in. None, and still parked, when its host
    has no ports left for it (logged for the operator)."""
    server = parking.server
    try:
        with transaction.atomic():
            if parking.stage == ParkedServer.Stage.PARKED:
                sipnode_services.server_allocate_ports(
                    server=server, callback=parking.callback_was_open
                )
            parking.delete()
            sipnode_services.server_set_desired_state(server=server, state=parking.desired_state)
    except sipnode_services.NoHostAvailable as exc:
        log.warning("parked server %s cannot be restored on its host: %s", server.pk, exc)
        return None
    return server


def _release_servers_no_longer_zombies(run: PurgeRun, policy: PurgePolicy) -> None:
    """Servers an interrupted run held stopped, or parked ones, that are zombies no more
    (exempted since, say) get their workers back."""
    zombies = selectors.zombie_servers(
        inactivity_days=policy.inactivity_days, now=timezone.now()
    ).values("pk")
    for server_id in ParkedServer.objects.exclude(server__in=zombies).values_list(
        "server_id", flat=True
    ):
        _give_back(server_id)


# Notices and restoring on login.


def _send_notices(run: PurgeRun, policy: PurgePolicy) -> None:
    now = timezone.now()
    for candidate in selectors.notice_candidates(policy=policy, now=now, limit=policy.cap_per_run):
        recipients = notice_send(candidate=candidate, policy=policy, now=now)
        _item(
            run,
            candidate,
            RunItem.Outcome.NOTICED,
            _("Notice sent to %(recipients)s.") % {"recipients": ", ".join(recipients)},
        )


def notice_send(*, candidate: Candidate, policy: PurgePolicy, now: datetime) -> list[str]:
    """E-mail the tenant's owners and admins, each in their language, that the server will
    be removed unless someone uses it; recorded so that it is sent once."""
    members = User.objects.filter(
        memberships__tenant_id=candidate.tenant_id,
        memberships__role__in=[Membership.Role.OWNER, Membership.Role.ADMIN],
    ).order_by("pk")
    removal = now + timedelta(days=policy.notice_days + policy.grace_days)
    for user in members:
        with translation.override(user.language or translation.get_language()):
            subject = _("Your SIP server %(server)s will be removed") % {
                "server": candidate.server_name
            }
            message = _(
                "Your virtual SIP server %(server)s (%(address)s) has not been used for a "
                "long time: no one of your company has logged in to sipcloud, and no phone "
                "has registered to it or made a call.\n\nIt will be removed, with its users "
                "and call records, after %(date)s. To keep it, log in to sipcloud or "
                "register a phone to it before then.\n"
            ) % {
                "server": candidate.server_name,
                "address": candidate.sip_address,
                "date": removal.strftime("%Y-%m-%d"),
            }
        send_mail(subject=subject, message=message, from_email=None, recipient_list=[user.email])
    recipients = [user.email for user in members]
    ZombieNotice.objects.update_or_create(
        server_id=candidate.server_id,
        defaults={"sent_at": now, "recipients": ", ".join(recipients)},
    )
    return recipients


@transaction.atomic
def parked_restore_for_member(*, user: User) -> list[VirtualServer]:
    """A member logged in: every server of their tenants the purge holds is given back."""
    held = (
        ParkedServer.objects.select_related("server__host")
        .select_for_update(of=("self",))
        .filter(server__tenant__memberships__user=user)
        .order_by("server_id")
    )
    return [server for parking in held if (server := _restore(parking)) is not None]
