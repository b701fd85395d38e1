"""The zombie purge's records: its policy (and who changed it), exemptions, runs with their
audit, servers parked or noticed on the way, and a tombstone for every purged server."""

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from sipnodes.models import VirtualServer
from tenants.models import Tenant

POLICY_ID = 1


class PurgePolicy(models.Model):
    """The one policy (row `POLICY_ID`); changed through `ops.services.policy_update` only,
    which writes a `PolicyChange` for every field it changes."""

    inactivity_days = models.PositiveIntegerField(
        _("inactivity window (days)"),
        default=730,
        validators=[MinValueValidator(30)],
        help_text=_("A server with no login, registration or call for this long is a zombie"),
    )
    cap_per_run = models.PositiveIntegerField(
        _("cap per run"),
        default=500,
        validators=[MinValueValidator(1)],
        help_text=_("The most servers one run parks or purges"),
    )
    notice_days = models.PositiveIntegerField(
        _("notice (days)"),
        default=0,
        help_text=_("E-mail the tenant's members this many days before the purge; 0: no notice"),
    )
    grace_days = models.PositiveIntegerField(
        _("grace period (days)"),
        default=0,
        help_text=_(
            "Park a zombie (worker stopped, ports released, data kept) this many days before "
            "it is purged; a member's login restores it. 0: purge at once"
        ),
    )
    paused = models.BooleanField(
        _("paused"), default=False, help_text=_("While paused, runs change nothing")
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("purge policy")
        verbose_name_plural = _("purge policies")

    def __str__(self) -> str:
        return str(_("Purge policy"))


class PolicyChange(models.Model):
    """One field of the policy changed by an operator: the policy's audit log."""

    changed_at = models.DateTimeField(_("changed at"), auto_now_add=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="+",
        verbose_name=_("changed by"),
    )
    field = models.CharField(_("setting"), max_length=40)
    old_value = models.CharField(_("old value"), max_length=40)
    new_value = models.CharField(_("new value"), max_length=40)

    class Meta:
        ordering = ["-changed_at", "-pk"]
        verbose_name = _("policy change")
        verbose_name_plural = _("policy changes")

    def __str__(self) -> str:
        return f"{self.field}: {self.old_value} -> {self.new_value}"


class Exemption(models.Model):
    """A server, or every server of a tenant, that the purge never touches."""

    server = models.OneToOneField(
        VirtualServer,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="purge_exemption",
        verbose_name=_("virtual SIP server"),
    )
    tenant = models.OneToOneField(
        Tenant,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="purge_exemption",
        verbose_name=_("tenant"),
    )
    reason = models.CharField(_("reason"), max_length=200)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="+",
        verbose_name=_("created by"),
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("exemption")
        verbose_name_plural = _("exemptions")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(server__isnull=True, tenant__isnull=False)
                | models.Q(server__isnull=False, tenant__isnull=True),
                name="exemption_server_or_tenant",
            )
        ]

    def __str__(self) -> str:
        return str(self.server or self.tenant)


class PurgeRun(models.Model):
    """One run of the purge and its audit: who started it, what it found and did."""

    class Trigger(models.TextChoices):
        BEAT = "beat", _("Daily schedule")
        OPERATOR = "operator", _("Operator")
        COMMAND = "command", _("Command line")

    class State(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        FINISHED = "finished", _("Finished")
        PAUSED = "paused", _("Skipped: paused")
        INTERRUPTED = "interrupted", _("Interrupted")
        OVERLAPPED = "overlapped", _("Skipped: another run was in progress")

    trigger = models.CharField(_("started by"), max_length=10, choices=Trigger.choices)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("operator"),
    )
    dry_run = models.BooleanField(_("dry run"), default=False)
    state = models.CharField(_("state"), max_length=12, choices=State.choices, default=State.QUEUED)
    queued_at = models.DateTimeField(_("queued at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    # The policy as the run found it.
    inactivity_days = models.PositiveIntegerField(_("inactivity window (days)"), default=0)
    cap = models.PositiveIntegerField(_("cap"), default=0)
    candidates = models.PositiveIntegerField(_("candidates"), default=0)
    purged = models.PositiveIntegerField(_("purged"), default=0)
    parked = models.PositiveIntegerField(_("parked"), default=0)
    noticed = models.PositiveIntegerField(_("notices sent"), default=0)
    skipped = models.PositiveIntegerField(_("skipped"), default=0)
    errors = models.PositiveIntegerField(_("errors"), default=0)

    class Meta:
        ordering = ["-queued_at", "-pk"]
        verbose_name = _("purge run")
        verbose_name_plural = _("purge runs")

    def __str__(self) -> str:
        return str(_("Purge run %(id)s") % {"id": self.pk})

    def get_absolute_url(self) -> str:
        return reverse("ops:purge-run", args=[self.pk])

    @property
    def done(self) -> bool:
        return self.state not in {self.State.QUEUED, self.State.RUNNING}


class RunItem(models.Model):
    """What a run did with one server, and why; kept after the server is gone."""

    class Outcome(models.TextChoices):
        CANDIDATE = "candidate", _("Candidate (dry run)")
        NOTICED = "noticed", _("Notice sent")
        PARKED = "parked", _("Parked")
        PURGED = "purged", _("Purged")
        SKIPPED = "skipped", _("Skipped")
        ERROR = "error", _("Error")

    run = models.ForeignKey(
        PurgeRun, on_delete=models.CASCADE, related_name="items", verbose_name=_("purge run")
    )
    server_id = models.BigIntegerField(_("server id"))
    server_name = models.CharField(_("server"), max_length=80)
    tenant_name = models.CharField(_("tenant"), max_length=120)
    outcome = models.CharField(_("outcome"), max_length=10, choices=Outcome.choices)
    reason = models.TextField(_("reason"))
    at = models.DateTimeField(_("at"), auto_now_add=True)

    class Meta:
        ordering = ["pk"]
        verbose_name = _("run item")
        verbose_name_plural = _("run items")
        indexes = [models.Index(fields=["run", "outcome"], name="runitem_run_outcome_idx")]

    def __str__(self) -> str:
        return f"{self.server_name}: {self.outcome}"


class ParkedServer(models.Model):
    """A zombie on its way out: its worker being stopped, or parked for the grace period.

    Present only while the purge holds the server: restored or purged, the row goes.
    """

    class Stage(models.TextChoices):
        STOPPING = "stopping", _("Worker being stopped")
        PARKED = "parked", _("Parked")

    server = models.OneToOneField(
        VirtualServer,
        on_delete=models.CASCADE,
        related_name="parking",
        verbose_name=_("virtual SIP server"),
    )
    run = models.ForeignKey(
        PurgeRun, on_delete=models.SET_NULL, null=True, related_name="+", verbose_name=_("run")
    )
    stage = models.CharField(_("stage"), max_length=10, choices=Stage.choices)
    stop_requested_at = models.DateTimeField(_("stop asked at"))
    parked_at = models.DateTimeField(_("parked at"), null=True, blank=True)
    purge_after = models.DateTimeField(_("purge after"), null=True, blank=True)
    sip_address = models.CharField(_("SIP address"), max_length=300)
    # What to give back on restore.
    desired_state = models.CharField(_("wanted state"), max_length=10)
    callback_was_open = models.BooleanField(_("call-back port was open"), default=False)

    class Meta:
        verbose_name = _("parked server")
        verbose_name_plural = _("parked servers")

    def __str__(self) -> str:
        return str(self.server)


class ZombieNotice(models.Model):
    """The e-mail telling a tenant that one of its servers will be purged."""

    server = models.OneToOneField(
        VirtualServer,
        on_delete=models.CASCADE,
        related_name="zombie_notice",
        verbose_name=_("virtual SIP server"),
    )
    sent_at = models.DateTimeField(_("sent at"))
    recipients = models.TextField(_("recipients"))

    class Meta:
        verbose_name = _("zombie notice")
        verbose_name_plural = _("zombie notices")

    def __str__(self) -> str:
        return str(self.server)


class Tombstone(models.Model):
    """What remains of a purged server: who, what, when, and the activity that made it a
    zombie."""

    server_uid = models.UUIDField(_("server uid"), unique=True)
    server_id = models.BigIntegerField(_("server id"))
    server_name = models.CharField(_("server"), max_length=80)
    sip_address = models.CharField(_("SIP address"), max_length=300)
    host_name = models.CharField(_("SIP host"), max_length=50)
    tenant = models.ForeignKey(
        Tenant,
        on_delete=models.SET_NULL,
        null=True,
        related_name="+",
        verbose_name=_("tenant"),
    )
    tenant_name = models.CharField(_("tenant"), max_length=120)
    run = models.ForeignKey(
        PurgeRun, on_delete=models.SET_NULL, null=True, related_name="+", verbose_name=_("run")
    )
    purged_at = models.DateTimeField(_("purged at"))
    server_created_at = models.DateTimeField(_("created at"))
    last_login_at = models.DateTimeField(_("last member login"), null=True)
    last_registration_at = models.DateTimeField(_("last registration at"), null=True)
    last_call_at = models.DateTimeField(_("last call at"), null=True)

    class Meta:
        ordering = ["-purged_at", "-pk"]
        verbose_name = _("tombstone")
        verbose_name_plural = _("tombstones")

    def __str__(self) -> str:
        return f"{self.tenant_name} / {self.server_name}"
