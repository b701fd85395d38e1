import uuid
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from tenants.models import Tenant

HOST_STALE_AFTER = timedelta(seconds=45)  # three missed polls (every 15 s) of the node agent
MEDIA_PORTS_PER_CLIENT = 4  # RTP + RTCP for audio and video, two legs per call, half the clients
FREE_EDITION = 5

digits = RegexValidator(r"^[0-9]+$", "Use digits only.")
optional_digits = RegexValidator(r"^[0-9]*$", "Use digits only.")


class SipHost(models.Model):
    """A machine that runs virtual servers; its port ranges are shared out among them."""

    name = models.SlugField(max_length=50, unique=True)
    public_address = models.CharField(max_length=255, help_text="Address phones use to reach it")
    listen_address = models.GenericIPAddressField(
        default="0.0.0.0", help_text="Local address the workers bind (0.0.0.0: all)"
    )
    sip_port_min = models.PositiveIntegerField(default=15060)
    sip_port_max = models.PositiveIntegerField(default=15999)
    callback_port_min = models.PositiveIntegerField(default=16000)
    callback_port_max = models.PositiveIntegerField(default=16999)
    media_port_min = models.PositiveIntegerField(default=20000)
    media_port_max = models.PositiveIntegerField(default=39999)
    created_at = models.DateTimeField(auto_now_add=True)
    # Written by the host's node agent each time it reports; stale means unreachable.
    last_seen_at = models.DateTimeField(null=True, blank=True)
    status_detail = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(sip_port_min__lte=models.F("sip_port_max"))
                & models.Q(callback_port_min__lte=models.F("callback_port_max"))
                & models.Q(media_port_min__lte=models.F("media_port_max")),
                name="siphost_ranges_ordered",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_reachable(self) -> bool:
        return (
            self.last_seen_at is not None and timezone.now() - self.last_seen_at < HOST_STALE_AFTER
        )

    def port_ranges(self) -> dict[str, range]:
        return {
            "sip": range(self.sip_port_min, self.sip_port_max + 1),
            "callback": range(self.callback_port_min, self.callback_port_max + 1),
            "media": range(self.media_port_min, self.media_port_max + 1),
        }

    def clean(self) -> None:
        ranges = sorted(self.port_ranges().items(), key=lambda item: item[1].start)
        for (name_a, a), (name_b, b) in zip(ranges, ranges[1:], strict=False):
            if a.stop > b.start:
                raise ValidationError(f"The {name_a} and {name_b} port ranges overlap.")
        for name, r in ranges:
            if r.start < 1024 or r.stop - 1 > 65535:
                raise ValidationError(f"The {name} port range must lie within 1024-65535.")


class VirtualServer(models.Model):
    """One customer's hosted SIP server; runs as its own worker process on its host."""

    class Edition(models.IntegerChoices):
        CLIENTS_5 = 5, "5 clients (free)"
        CLIENTS_10 = 10, "10 clients"
        CLIENTS_20 = 20, "20 clients"
        CLIENTS_50 = 50, "50 clients"
        CLIENTS_100 = 100, "100 clients"
        CLIENTS_200 = 200, "200 clients"
        CLIENTS_500 = 500, "500 clients"

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        STARTING = "starting", "Starting"
        FAILED = "failed", "Failed"
        UNKNOWN = "unknown", "Unknown"

    class PromptLanguage(models.TextChoices):
        ENGLISH = "en", "English"
        CHINESE = "zh", "Chinese"

    class DigestAlgorithms(models.TextChoices):
        """The digest challenges the worker sends, most preferred first (RFC 8760)."""

        MD5 = "md5", "MD5 only"
        SHA256_MD5 = "sha256+md5", "SHA-256 and MD5"
        SHA256 = "sha256", "SHA-256 only"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="servers")
    # Never reused, unlike the id (a new database hands out id 1 again): keys the worker's
    # live state in Redis, so a server can never inherit another's registrations.
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=80)
    edition = models.PositiveIntegerField(choices=Edition.choices, default=Edition.CLIENTS_5)
    paid_until = models.DateField(null=True, blank=True)
    host = models.ForeignKey(SipHost, on_delete=models.PROTECT, related_name="servers")
    realm = models.CharField(max_length=100, unique=True, help_text="SIP digest realm; fixed")

    sip_port = models.PositiveIntegerField()
    callback_port = models.PositiveIntegerField(help_text="0: the call-back service is closed")
    media_port_first = models.PositiveIntegerField()
    media_port_last = models.PositiveIntegerField()

    # System settings.
    out_group_prefix = models.CharField(
        max_length=4, default="9", blank=True, validators=[optional_digits]
    )
    prompt_language = models.CharField(
        max_length=2, choices=PromptLanguage.choices, default=PromptLanguage.ENGLISH
    )
    media_relay = models.BooleanField(default=True)
    upnp = models.BooleanField("UPnP", default=False)
    # MD5 only by default: the one choice every phone we test with can register with
    # (docs/operations.md, "Digest algorithms").
    digest_algorithms = models.CharField(
        max_length=10,
        choices=DigestAlgorithms.choices,
        default=DigestAlgorithms.MD5,
        help_text=(
            "MD5 only: every phone registers, baresip 1.0 (Debian 12) and SIPp included. "
            "SHA-256 and MD5: SHA-256 is offered first; linphone 5.1 and pjsua 2.15 "
            "register, but phones that answer only the first challenge (SIPp) or give up "
            "when they see SHA-256 (baresip 1.0) cannot. SHA-256 only: MD5 answers are "
            "refused; only phones with SHA-256 digest (linphone, pjsua) register."
        ),
    )

    # CDR options.
    cdr_failed_calls = models.BooleanField("generate failed-call CDR", default=True)
    cdr_realtime_display = models.BooleanField("real-time display", default=True)

    # Call-back (IIF) service.
    callback_app_server_address = models.CharField(
        "application server address", max_length=255, default="127.0.0.1", blank=True
    )
    callback_default_caller = models.CharField(
        "default caller number", max_length=32, blank=True, validators=[optional_digits]
    )

    desired_state = models.CharField(max_length=10, choices=State.choices, default=State.RUNNING)
    # Held stopped until the owner verifies the e-mail address (production default).
    awaiting_verification = models.BooleanField(default=False)
    actual_state = models.CharField(max_length=10, choices=State.choices, default=State.UNKNOWN)
    state_detail = models.TextField(blank=True, help_text="Why the state is what it is")
    restart_count = models.PositiveIntegerField(default=0)
    state_checked_at = models.DateTimeField(null=True, blank=True)
    registered_clients = models.PositiveIntegerField(default=0)
    registered_clients_at = models.DateTimeField(
        null=True, blank=True, help_text="Time of the event that set registered_clients"
    )
    last_registration_at = models.DateTimeField(null=True, blank=True)
    last_call_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "sip_port"], name="vs_unique_sip_port"),
            models.UniqueConstraint(
                fields=["host", "callback_port"],
                condition=models.Q(callback_port__gt=0),
                name="vs_unique_callback_port",
            ),
        ]
        indexes = [
            # The zombie purge looks for servers with no activity since a cut-off.
            models.Index(fields=["last_registration_at"], name="vs_last_registration_idx"),
            models.Index(fields=["last_call_at"], name="vs_last_call_idx"),
            models.Index(fields=["created_at"], name="vs_created_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("tenants:server-detail", args=[self.pk])

    @property
    def sip_address(self) -> str:
        return f"{self.host.public_address}:{self.sip_port}"

    @property
    def is_free(self) -> bool:
        return self.edition == FREE_EDITION


class PortAllocation(models.Model):
    """The ledger of ports handed out on a host: one row per port, so no port has two owners."""

    class Purpose(models.TextChoices):
        SIP = "sip", "SIP"
        CALLBACK = "callback", "Call-back"
        MEDIA = "media", "Media relay"

    host = models.ForeignKey(SipHost, on_delete=models.CASCADE, related_name="port_allocations")
    port = models.PositiveIntegerField()
    server = models.ForeignKey(
        VirtualServer, on_delete=models.CASCADE, related_name="port_allocations"
    )
    purpose = models.CharField(max_length=10, choices=Purpose.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "port"], name="port_allocation_unique_port")
        ]

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.purpose})"


class LocalUser(models.Model):
    """A SIP account on a virtual server; only digest HA1 values are kept, never the password."""

    server = models.ForeignKey(VirtualServer, on_delete=models.CASCADE, related_name="users")
    number = models.CharField(max_length=32, validators=[digits])
    display_name = models.CharField(max_length=80, blank=True)
    ha1_md5 = models.CharField(max_length=32)
    ha1_sha256 = models.CharField(max_length=64)
    call_level = models.PositiveSmallIntegerField(
        default=1,
        validators=[MaxValueValidator(9)],
        help_text="Dial-plan rules may require a minimum call level (0-9)",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["server", "number"]
        constraints = [
            models.UniqueConstraint(fields=["server", "number"], name="localuser_unique_number"),
            models.CheckConstraint(
                condition=models.Q(call_level__lte=9), name="localuser_call_level_0_9"
            ),
        ]

    def __str__(self) -> str:
        return self.number


class Cdr(models.Model):
    """A call detail record written by a virtual server's O-side; unique by its UUID.

    The columns are the fields of the CDR event, `sipnodes.engine.events.CdrData`
    (its times as datetimes: `sipnodes.ingest.parse.cdr_columns`).
    """

    uuid = models.UUIDField(unique=True)
    server = models.ForeignKey(VirtualServer, on_delete=models.CASCADE, related_name="cdrs")
    call_id = models.CharField(max_length=255)
    caller = models.CharField(max_length=64)
    dialed = models.CharField(max_length=64)
    callee = models.CharField(max_length=64, blank=True)
    route = models.CharField(max_length=32, blank=True)
    started_at = models.DateTimeField()
    ring_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    talk_seconds = models.PositiveIntegerField(default=0)
    released_by = models.CharField(max_length=10, blank=True)
    status = models.PositiveSmallIntegerField(help_text="Final SIP status given to the caller")
    answered = models.BooleanField()
    fci = models.CharField("FCI", max_length=255)
    cause = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Q.850 cause")
    call_tag = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "CDR"
        indexes = [
            models.Index(fields=["server", "answered", "-started_at"], name="cdr_server_table_idx"),
            models.Index(fields=["started_at"], name="cdr_started_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.caller} -> {self.dialed} ({self.fci})"
