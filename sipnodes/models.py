import re
import uuid
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import (
    MaxValueValidator,
    MinValueValidator,
    RegexValidator,
    validate_ipv46_address,
)
from django.db import models
from django.db.models.functions import Coalesce, Greatest
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from sipnodes.engine.config import FEATURE_CODE
from tenants.models import Tenant

HOST_STALE_AFTER = timedelta(seconds=45)  # three missed polls (every 15 s) of the node agent
MEDIA_PORTS_PER_CLIENT = 4  # RTP + RTCP for audio and video, two legs per call, half the clients
FREE_EDITION = 5

digits = RegexValidator(r"^[0-9]+$", _("Use digits only."))
optional_digits = RegexValidator(r"^[0-9]*$", _("Use digits only."))
# The call-back shared secret, as the worker takes it (sipnodes/engine/config.py).
callback_secret_format = RegexValidator(
    r"^[!-~]{16,128}$",
    _("Use 16 to 128 letters, digits or punctuation marks, without spaces."),
)
# The worker's own rule for a code (a lone * or # would not load there).
feature_code_chars = RegexValidator(
    FEATURE_CODE, _("Start with * or #, then at least one more digit, * or #.")
)
# A SIP account name or realm, as the worker puts it in a quoted digest parameter:
# printable ASCII without quotes or backslashes (and, for names, without spaces).
sip_name_chars = RegexValidator(
    r"^[!#-\[\]-~]*$", _("Use letters, digits and punctuation marks, without spaces or quotes.")
)
sip_realm_chars = RegexValidator(
    r"^[ !#-\[\]-~]*$", _("Use letters, digits, spaces and punctuation marks, without quotes.")
)
# A DNS host name (RFC 1123 labels, at least one dot or a single label such as
# "localhost"); IP addresses are checked by `validate_ipv46_address` first.
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$"
)


def validate_host_address(value: str) -> None:
    """An IP address or a DNS host name: what the worker can send a SIP request to."""
    try:
        validate_ipv46_address(value)
    except ValidationError:
        # All digits and dots is a mistyped IPv4 address, not a host name.
        if not _HOST_NAME.match(value) or re.fullmatch(r"[0-9.]+", value):
            raise ValidationError(
                _("Enter an IP address or a host name such as sip.example.com."),
                code="invalid",
            ) from None


class SipHost(models.Model):
    """A machine that runs virtual servers; its port ranges are shared out among them."""

    name = models.SlugField(_("name"), max_length=50, unique=True)
    public_address = models.CharField(
        _("public address"), max_length=255, help_text=_("Address phones use to reach it")
    )
    listen_address = models.GenericIPAddressField(
        _("listen address"),
        default="0.0.0.0",
        help_text=_("Local address the workers bind (0.0.0.0: all)"),
    )
    sip_port_min = models.PositiveIntegerField(_("first SIP port"), default=15060)
    sip_port_max = models.PositiveIntegerField(_("last SIP port"), default=15999)
    callback_port_min = models.PositiveIntegerField(_("first call-back port"), default=16000)
    callback_port_max = models.PositiveIntegerField(_("last call-back port"), default=16999)
    media_port_min = models.PositiveIntegerField(_("first media relay port"), default=20000)
    media_port_max = models.PositiveIntegerField(_("last media relay port"), default=39999)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    # Written by the host's node agent each time it reports; stale means unreachable.
    last_seen_at = models.DateTimeField(_("last seen at"), null=True, blank=True)
    status_detail = models.TextField(_("status detail"), blank=True)
    # UPnP (docs/upnp.md): a host behind an office router maps its servers' ports there.
    behind_router = models.BooleanField(
        _("behind a router"),
        default=False,
        help_text=_(
            "A home or office router with UPnP in front of this host: its servers with "
            "UPnP on map their ports there and advertise the router's external address"
        ),
    )
    router_max_mappings = models.PositiveIntegerField(
        _("most router mappings"),
        default=30,
        validators=[MinValueValidator(1)],
        help_text=_("How many port mappings the router takes, for all servers of this host"),
    )
    # Written by the host's UPnP agent: the address the router reports (blank: not known).
    router_external_address = models.CharField(
        _("router's external address"), max_length=45, blank=True
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("SIP host")
        verbose_name_plural = _("SIP hosts")
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

    @property
    def advertised_address(self) -> str:
        """What its servers put in Via/Contact/SDP: behind a router, the router's external
        address once the UPnP agent has read it; else the public address."""
        if self.behind_router and self.router_external_address:
            return self.router_external_address
        return self.public_address

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
                raise ValidationError(
                    _("The %(a)s and %(b)s port ranges overlap.")
                    % {"a": PORT_RANGE_NAMES[name_a], "b": PORT_RANGE_NAMES[name_b]}
                )
        for name, r in ranges:
            if r.start < 1024 or r.stop - 1 > 65535:
                raise ValidationError(
                    _("The %(name)s port range must lie within 1024-65535.")
                    % {"name": PORT_RANGE_NAMES[name]}
                )


# The names of a host's port ranges (`SipHost.port_ranges`) in its validation errors.
PORT_RANGE_NAMES = {"sip": _("SIP"), "callback": _("call-back"), "media": _("media relay")}


# A server's last sign of life: its last registration or call, else its creation. Each
# nullable time is coalesced, as GREATEST ignores NULLs on PostgreSQL but not on SQLite.
LAST_ACTIVITY = Greatest(
    "created_at",
    Coalesce("last_registration_at", "created_at"),
    Coalesce("last_call_at", "created_at"),
)


class UpnpState(models.TextChoices):
    """A server's UPnP mappings on its host's router, as the host's UPnP agent last saw them."""

    PENDING = "pending", _("Waiting for the router")
    MAPPED = "mapped", _("Mapped")
    MANUAL = "manual", _("Forward ports by hand: edition of 100 clients or more")
    NO_ROOM = "no_room", _("Forward ports by hand: no room left on the router")
    REFUSED = "refused", _("Refused by the router")
    NO_ROUTER = "no_router", _("No router found")


class VirtualServer(models.Model):
    """One customer's hosted SIP server; runs as its own worker process on its host."""

    class Edition(models.IntegerChoices):
        CLIENTS_5 = 5, _("5 clients (free)")
        CLIENTS_10 = 10, _("10 clients")
        CLIENTS_20 = 20, _("20 clients")
        CLIENTS_50 = 50, _("50 clients")
        CLIENTS_100 = 100, _("100 clients")
        CLIENTS_200 = 200, _("200 clients")
        CLIENTS_500 = 500, _("500 clients")

    class State(models.TextChoices):
        RUNNING = "running", _("Running")
        STOPPED = "stopped", _("Stopped")
        STARTING = "starting", _("Starting")
        FAILED = "failed", _("Failed")
        UNKNOWN = "unknown", _("Unknown")

    class PromptLanguage(models.TextChoices):
        ENGLISH = "en", _("English")
        CHINESE = "zh", _("Chinese")

    class DigestAlgorithms(models.TextChoices):
        """The digest challenges the worker sends, most preferred first (RFC 8760)."""

        MD5 = "md5", _("MD5 only")
        SHA256_MD5 = "sha256+md5", _("SHA-256 and MD5")
        SHA256 = "sha256", _("SHA-256 only")

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="servers", verbose_name=_("tenant")
    )
    # Never reused, unlike the id (a new database hands out id 1 again): keys the worker's
    # live state in Redis, so a server can never inherit another's registrations.
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(_("name"), max_length=80)
    edition = models.PositiveIntegerField(
        _("edition"), choices=Edition.choices, default=Edition.CLIENTS_5
    )
    paid_until = models.DateField(_("paid until"), null=True, blank=True)
    host = models.ForeignKey(
        SipHost, on_delete=models.PROTECT, related_name="servers", verbose_name=_("SIP host")
    )
    realm = models.CharField(
        _("realm"), max_length=100, unique=True, help_text=_("SIP digest realm; fixed")
    )

    sip_port = models.PositiveIntegerField(_("SIP port"))
    callback_port = models.PositiveIntegerField(
        _("call-back port"), help_text=_("0: the call-back service is closed")
    )
    media_port_first = models.PositiveIntegerField(_("first media relay port"))
    media_port_last = models.PositiveIntegerField(_("last media relay port"))

    # System settings.
    out_group_prefix = models.CharField(
        _("out-group call prefix"),
        max_length=4,
        default="9",
        blank=True,
        validators=[optional_digits],
    )
    prompt_language = models.CharField(
        _("voice prompt language"),
        max_length=2,
        choices=PromptLanguage.choices,
        default=PromptLanguage.ENGLISH,
    )
    media_relay = models.BooleanField(_("media relay"), default=True)
    upnp = models.BooleanField(_("UPnP"), default=False)
    # MD5 only by default: the one choice every phone we test with can register with
    # (docs/operations.md, "Digest algorithms").
    digest_algorithms = models.CharField(
        _("digest algorithms"),
        max_length=10,
        choices=DigestAlgorithms.choices,
        default=DigestAlgorithms.MD5,
        help_text=_(
            "MD5 only: every phone registers, baresip 1.0 (Debian 12) and SIPp included. "
            "SHA-256 and MD5: SHA-256 is offered first; linphone 5.1 and pjsua 2.15 "
            "register, but phones that answer only the first challenge (SIPp) or give up "
            "when they see SHA-256 (baresip 1.0) cannot. SHA-256 only: MD5 answers are "
            "refused; only phones with SHA-256 digest (linphone, pjsua) register."
        ),
    )

    # CDR options.
    cdr_failed_calls = models.BooleanField(_("generate failed-call CDR"), default=True)
    cdr_realtime_display = models.BooleanField(_("real-time display"), default=True)

    # The trunk the out-group prefix reaches (docs/trunks.md); none: those calls fail.
    external_line = models.ForeignKey(
        "Trunk",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("external line"),
    )

    # Call-back (IIF) service.
    callback_app_server_address = models.CharField(
        _("application server address"),
        max_length=255,
        default="127.0.0.1",
        blank=True,
        validators=[validate_ipv46_address],
    )
    callback_default_caller = models.CharField(
        _("default caller number"), max_length=32, blank=True, validators=[optional_digits]
    )
    # Signs call-back requests (HMAC-SHA256, docs/callback.md); blank: not required. Never
    # shown again once saved, never logged; rendered only into the worker's config file.
    callback_secret = models.CharField(
        _("call-back shared secret"),
        max_length=128,
        blank=True,
        default="",
        validators=[callback_secret_format],
    )

    desired_state = models.CharField(
        _("wanted state"), max_length=10, choices=State.choices, default=State.RUNNING
    )
    # Held stopped until the owner verifies the e-mail address (production default).
    awaiting_verification = models.BooleanField(_("awaiting verification"), default=False)
    actual_state = models.CharField(
        _("state"), max_length=10, choices=State.choices, default=State.UNKNOWN
    )
    state_detail = models.TextField(
        _("state detail"), blank=True, help_text=_("Why the state is what it is")
    )
    restart_count = models.PositiveIntegerField(_("restarts after a crash"), default=0)
    # Written by the host's UPnP agent (sipnodes/upnp/); blank: UPnP does not apply.
    upnp_state = models.CharField(
        _("UPnP state"), max_length=10, choices=UpnpState.choices, blank=True
    )
    upnp_detail = models.TextField(_("UPnP detail"), blank=True)
    # Mapped: how many ports of the media block, from its first, the router forwards.
    upnp_media_ports = models.PositiveIntegerField(_("media ports mapped"), default=0)
    upnp_checked_at = models.DateTimeField(_("UPnP checked at"), null=True, blank=True)
    state_checked_at = models.DateTimeField(_("state checked at"), null=True, blank=True)
    registered_clients = models.PositiveIntegerField(_("registered clients"), default=0)
    registered_clients_at = models.DateTimeField(
        _("registered clients as of"),
        null=True,
        blank=True,
        help_text=_("Time of the event that set the registered clients"),
    )
    last_registration_at = models.DateTimeField(_("last registration at"), null=True, blank=True)
    last_call_at = models.DateTimeField(_("last call at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        verbose_name = _("virtual SIP server")
        verbose_name_plural = _("virtual SIP servers")
        constraints = [
            # A server parked by the zombie purge has given its ports back (port 0).
            models.UniqueConstraint(
                fields=["host", "sip_port"],
                condition=models.Q(sip_port__gt=0),
                name="vs_unique_sip_port",
            ),
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
            # Its last sign of life (`LAST_ACTIVITY`): the zombie selector's range scan.
            models.Index(LAST_ACTIVITY, name="vs_last_activity_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("tenants:server-detail", args=[self.pk])

    @property
    def sip_address(self) -> str:
        return f"{self.host.advertised_address}:{self.sip_port}"

    @property
    def is_free(self) -> bool:
        return self.edition == FREE_EDITION


class PortAllocation(models.Model):
    """The ledger of ports handed out on a host: one row per port, so no port has two owners."""

    class Purpose(models.TextChoices):
        SIP = "sip", _("SIP")
        CALLBACK = "callback", _("Call-back")
        MEDIA = "media", _("Media relay")

    host = models.ForeignKey(
        SipHost,
        on_delete=models.CASCADE,
        related_name="port_allocations",
        verbose_name=_("SIP host"),
    )
    port = models.PositiveIntegerField(_("port"))
    server = models.ForeignKey(
        VirtualServer,
        on_delete=models.CASCADE,
        related_name="port_allocations",
        verbose_name=_("virtual SIP server"),
    )
    purpose = models.CharField(_("purpose"), max_length=10, choices=Purpose.choices)

    class Meta:
        verbose_name = _("port allocation")
        verbose_name_plural = _("port allocations")
        constraints = [
            models.UniqueConstraint(fields=["host", "port"], name="port_allocation_unique_port")
        ]

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.purpose})"


NO_ANSWER_SECONDS = range(5, 301)
PICKUP_GROUPS = range(0, 100)  # 0: in no pickup group
# The four reasons a call is forwarded: `LocalUser.forward_<condition>`, the engine's
# `Forwarding.<condition>`.
FORWARD_CONDITIONS = ("unconditional", "busy", "no_answer", "unreachable")


class LocalUser(models.Model):
    """A SIP account on a virtual server; only digest HA1 values are kept, never the password."""

    server = models.ForeignKey(
        VirtualServer,
        on_delete=models.CASCADE,
        related_name="users",
        verbose_name=_("virtual SIP server"),
    )
    number = models.CharField(_("number"), max_length=32, validators=[digits])
    display_name = models.CharField(_("display name"), max_length=80, blank=True)
    ha1_md5 = models.CharField(_("MD5 digest (HA1)"), max_length=32)
    ha1_sha256 = models.CharField(_("SHA-256 digest (HA1)"), max_length=64)
    call_level = models.PositiveSmallIntegerField(
        _("call level"),
        default=1,
        validators=[MaxValueValidator(9)],
        help_text=_("Dial-plan rules may require a minimum call level (0-9)"),
    )

    # Call settings (docs/pbx-features.md); the user changes DND and forwarding from the
    # phone too, with feature codes: ingest brings those changes back here.
    dnd = models.BooleanField(
        _("do not disturb"),
        default=False,
        help_text=_(
            "The user's phones do not ring; callers hear busy, or go to the busy forwarding number"
        ),
    )
    forward_unconditional = models.CharField(
        _("forward all calls to"), max_length=32, blank=True, validators=[optional_digits]
    )
    forward_busy = models.CharField(
        _("forward when busy to"), max_length=32, blank=True, validators=[optional_digits]
    )
    forward_no_answer = models.CharField(
        _("forward when not answered to"), max_length=32, blank=True, validators=[optional_digits]
    )
    forward_unreachable = models.CharField(
        _("forward when unreachable to"), max_length=32, blank=True, validators=[optional_digits]
    )
    no_answer_seconds = models.PositiveSmallIntegerField(
        _("ring time (seconds)"),
        default=20,
        validators=[
            MinValueValidator(NO_ANSWER_SECONDS.start),
            MaxValueValidator(NO_ANSWER_SECONDS[-1]),
        ],
        help_text=_("How long the user's phones ring before a call counts as not answered"),
    )
    pickup_group = models.PositiveSmallIntegerField(
        _("pickup group"),
        default=0,
        validators=[MaxValueValidator(PICKUP_GROUPS[-1])],
        help_text=_("Users of one group (1-99) may answer each other's ringing calls; 0: none"),
    )
    # When DND or forwarding last changed, from the portal or from a phone: the newer wins.
    call_settings_changed = models.DateTimeField(
        _("call settings changed at"), null=True, blank=True, editable=False
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["server", "number"]
        verbose_name = _("local user")
        verbose_name_plural = _("local users")
        constraints = [
            models.UniqueConstraint(fields=["server", "number"], name="localuser_unique_number"),
            models.CheckConstraint(
                condition=models.Q(call_level__lte=9), name="localuser_call_level_0_9"
            ),
            models.CheckConstraint(
                condition=models.Q(
                    no_answer_seconds__gte=NO_ANSWER_SECONDS.start,
                    no_answer_seconds__lte=NO_ANSWER_SECONDS[-1],
                ),
                name="localuser_no_answer_seconds_range",
            ),
            models.CheckConstraint(
                condition=models.Q(pickup_group__lte=PICKUP_GROUPS[-1]),
                name="localuser_pickup_group_0_99",
            ),
        ]

    def __str__(self) -> str:
        return self.number

    @property
    def forwarding(self) -> dict[str, str]:
        """The forwarding targets that are set, by condition (the engine's `Forwarding`)."""
        return {
            condition: target
            for condition in FORWARD_CONDITIONS
            if (target := getattr(self, f"forward_{condition}"))
        }


RING_SECONDS = range(5, 301)
HUNT_TIMEOUT_SECONDS = range(5, 3601)


class HuntGroup(models.Model):
    """A number of a virtual server that rings a list of its local users.

    Users and hunt groups share the server's numbers: a number is one or the other.
    """

    class Mode(models.TextChoices):
        """The engine's `HUNT_MODES`, with what each does in words."""

        SIMULTANEOUS = "simultaneous", _("Simultaneous: all members ring at once")
        SEQUENTIAL = "sequential", _("Sequential: members ring one by one, first to last")
        ROUND_ROBIN = (
            "round_robin",
            _("Round robin: one by one, each call starting one member further down the list"),
        )

    server = models.ForeignKey(
        VirtualServer,
        on_delete=models.CASCADE,
        related_name="hunt_groups",
        verbose_name=_("virtual SIP server"),
    )
    number = models.CharField(_("number"), max_length=32, validators=[digits])
    name = models.CharField(_("name"), max_length=80)
    mode = models.CharField(
        _("mode"), max_length=16, choices=Mode.choices, default=Mode.SIMULTANEOUS
    )
    ring_seconds = models.PositiveSmallIntegerField(
        _("ring time per member (seconds)"),
        default=15,
        validators=[MinValueValidator(RING_SECONDS.start), MaxValueValidator(RING_SECONDS[-1])],
        help_text=_("Sequential and round robin: how long each member rings before the next"),
    )
    timeout = models.PositiveSmallIntegerField(
        _("group timeout (seconds)"),
        default=60,
        validators=[
            MinValueValidator(HUNT_TIMEOUT_SECONDS.start),
            MaxValueValidator(HUNT_TIMEOUT_SECONDS[-1]),
        ],
        help_text=_("After this long unanswered, the call goes to the overflow number"),
    )
    overflow = models.CharField(
        _("overflow number"),
        max_length=32,
        blank=True,
        validators=[optional_digits],
        help_text=_("Where unanswered calls go; empty: the caller hears that nobody answered"),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["server", "number"]
        verbose_name = _("hunt group")
        verbose_name_plural = _("hunt groups")
        constraints = [
            models.UniqueConstraint(fields=["server", "number"], name="huntgroup_unique_number"),
            models.CheckConstraint(
                condition=models.Q(
                    ring_seconds__gte=RING_SECONDS.start, ring_seconds__lte=RING_SECONDS[-1]
                ),
                name="huntgroup_ring_seconds_range",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    timeout__gte=HUNT_TIMEOUT_SECONDS.start,
                    timeout__lte=HUNT_TIMEOUT_SECONDS[-1],
                ),
                name="huntgroup_timeout_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.number} {self.name}"


class HuntGroupMember(models.Model):
    """One local user in a hunt group, at its place in the ring order (0 first)."""

    group = models.ForeignKey(
        HuntGroup, on_delete=models.CASCADE, related_name="members", verbose_name=_("hunt group")
    )
    user = models.ForeignKey(
        LocalUser,
        on_delete=models.CASCADE,
        related_name="hunt_group_memberships",
        verbose_name=_("local user"),
    )
    position = models.PositiveSmallIntegerField(_("position"))

    class Meta:
        ordering = ["group", "position"]
        verbose_name = _("hunt group member")
        verbose_name_plural = _("hunt group members")
        constraints = [
            models.UniqueConstraint(fields=["group", "user"], name="huntgroupmember_unique_user"),
            models.UniqueConstraint(
                fields=["group", "position"], name="huntgroupmember_unique_position"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.group.number}: {self.user.number}"


class FeatureCode(models.Model):
    """A server's own code for one feature, where it differs from the engine's default.

    One row per renamed feature, not a copy of every code: the defaults stay in one place
    (`sipnodes.engine.config.FeatureCodes`), so a feature the server never renamed follows
    the engine's default, and a new feature needs no migration. Rows rather than a JSON
    field, so the database itself keeps one code per feature and no two renamed features
    on one code; a clash with another feature's default is refused by the service.
    """

    server = models.ForeignKey(
        VirtualServer,
        on_delete=models.CASCADE,
        related_name="feature_codes",
        verbose_name=_("virtual SIP server"),
    )
    # One of the engine's `FEATURES` (checked by the service, not by choices: a feature the
    # engine adds needs no migration).
    feature = models.CharField(_("feature"), max_length=32)
    code = models.CharField(_("code"), max_length=16, validators=[feature_code_chars])

    class Meta:
        ordering = ["server", "feature"]
        verbose_name = _("feature code")
        verbose_name_plural = _("feature codes")
        constraints = [
            models.UniqueConstraint(
                fields=["server", "feature"], name="featurecode_one_per_feature"
            ),
            models.UniqueConstraint(fields=["server", "code"], name="featurecode_unique_code"),
        ]

    def __str__(self) -> str:
        return f"{self.feature}={self.code}"


TRUNK_PORTS = range(1, 65536)
TRUNK_EXPIRES_SECONDS = range(60, 86401)
CALL_LEVELS = range(0, 10)  # a local user's call level, and what a dial-plan rule requires


class Trunk(models.Model):
    """An upstream SIP server a virtual server sends calls to and takes calls from: an
    ITSP, a PSTN gateway, or another virtual server (docs/trunks.md).

    The password is kept because the worker must answer the upstream's digest challenges
    with it, so it cannot be a digest; it is not editable through any model form, is never
    shown once saved, and is rendered only into the worker's config of a registering trunk.
    """

    class Transport(models.TextChoices):
        UDP = "UDP", _("UDP")
        TCP = "TCP", _("TCP")

    class Mode(models.TextChoices):
        REGISTER = "register", _("Registration: the server registers with the upstream")
        IP_TRUST = "ip_trust", _("IP trust: the upstream knows the server by its address")

    class State(models.TextChoices):
        """What the worker last reported about the trunk's registration."""

        UNKNOWN = "unknown", _("Not reported yet")
        REGISTERED = "registered", _("Registered")
        FAILING = "failing", _("Failing")
        UNREGISTERED = "unregistered", _("Not registered")

    class Inbound(models.TextChoices):
        """Where the worker lets calls from the trunk go (`engine.config.Trunk.inbound`)."""

        DIDS = "dids", _("Its DIDs and default user only")
        LOCAL = "local", _("Also any local user or hunt group, by its number")
        TRANSIT = "transit", _("This server's dial plan, other trunks included")

    server = models.ForeignKey(
        VirtualServer,
        on_delete=models.CASCADE,
        related_name="trunks",
        verbose_name=_("virtual SIP server"),
    )
    name = models.CharField(_("name"), max_length=80)
    address = models.CharField(
        _("address"),
        max_length=253,
        validators=[validate_host_address],
        help_text=_("The upstream's IP address or host name"),
    )
    port = models.PositiveIntegerField(
        _("port"),
        default=5060,
        validators=[MinValueValidator(TRUNK_PORTS.start), MaxValueValidator(TRUNK_PORTS[-1])],
    )
    transport = models.CharField(
        _("transport"), max_length=3, choices=Transport.choices, default=Transport.UDP
    )
    mode = models.CharField(
        _("authentication"), max_length=10, choices=Mode.choices, default=Mode.REGISTER
    )
    username = models.CharField(
        _("user name"),
        max_length=64,
        blank=True,
        validators=[sip_name_chars],
        help_text=_("The account at the upstream (registration only)"),
    )
    auth_username = models.CharField(
        _("authentication user name"),
        max_length=64,
        blank=True,
        validators=[sip_name_chars],
        help_text=_("Only if the upstream gave one that differs from the user name"),
    )
    password = models.CharField(_("password"), max_length=128, blank=True, editable=False)
    realm = models.CharField(
        _("realm"),
        max_length=100,
        blank=True,
        validators=[sip_realm_chars],
        help_text=_("Only if the upstream told you one; empty: the realm the upstream names"),
    )
    expires = models.PositiveIntegerField(
        _("registration expiry (seconds)"),
        default=3600,
        validators=[
            MinValueValidator(TRUNK_EXPIRES_SECONDS.start),
            MaxValueValidator(TRUNK_EXPIRES_SECONDS[-1]),
        ],
    )
    caller_id = models.CharField(
        _("caller number presented"),
        max_length=32,
        blank=True,
        validators=[optional_digits],
        help_text=_("The number the upstream sees on outbound calls; empty: the caller's own"),
    )
    default_user = models.ForeignKey(
        LocalUser,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("default user"),
        help_text=_("Rings for inbound calls to a number that is no DID; none: refused"),
    )
    caller_prefix = models.CharField(
        _("caller number prefix"),
        max_length=32,
        blank=True,
        validators=[optional_digits],
        help_text=_(
            "Put before the caller's own number on outbound calls, so that the far end can "
            "call back through its own trunk (a branch's prefix); empty: nothing is added"
        ),
    )
    inbound = models.CharField(
        _("inbound calls may reach"),
        max_length=8,
        choices=Inbound.choices,
        default=Inbound.DIDS,
        help_text=_(
            "Only choose local numbers or the dial plan for a trunk to another server of yours: "
            "whoever sends calls on the trunk can then reach those numbers"
        ),
    )
    # Set when a branch network made the trunk: it is then changed only through the network.
    branch_network = models.ForeignKey(
        "BranchNetwork",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        editable=False,
        related_name="trunks",
        verbose_name=_("branch network"),
    )
    # The network's server this trunk points at: its address and SIP port follow that
    # server's (`branch_services.server_address_changed`).
    branch_peer = models.ForeignKey(
        VirtualServer,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
        verbose_name=_("points at server"),
    )
    # Written by ingest from the worker's `trunk` events, newest first (`state_at`).
    state = models.CharField(
        _("state"), max_length=12, choices=State.choices, default=State.UNKNOWN, editable=False
    )
    state_reason = models.CharField(_("why"), max_length=255, blank=True, editable=False)
    state_at = models.DateTimeField(
        _("state as of"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("Time of the event that set the state, or of the change that reset it"),
    )
    last_attempt_at = models.DateTimeField(_("last attempt"), null=True, blank=True, editable=False)
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["server", "name"]
        verbose_name = _("trunk")
        verbose_name_plural = _("trunks")
        constraints = [
            models.UniqueConstraint(fields=["server", "name"], name="trunk_unique_name"),
            models.CheckConstraint(
                condition=models.Q(port__gte=TRUNK_PORTS.start, port__lte=TRUNK_PORTS[-1]),
                name="trunk_port_range",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    expires__gte=TRUNK_EXPIRES_SECONDS.start,
                    expires__lte=TRUNK_EXPIRES_SECONDS[-1],
                ),
                name="trunk_expires_range",
            ),
            # A registering trunk has an account to register.
            models.CheckConstraint(
                condition=models.Q(mode="ip_trust") | ~models.Q(username=""),
                name="trunk_register_has_username",
                violation_error_message=_("A registering trunk needs a user name."),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def registers(self) -> bool:
        return self.mode == self.Mode.REGISTER

    @property
    def has_password(self) -> bool:
        return bool(self.password)


class TrunkDid(models.Model):
    """An inbound number of a trunk (a DID) and the local user it rings.

    The server is kept beside the trunk so the database itself holds each number once
    per server, whichever trunk it arrives on.
    """

    server = models.ForeignKey(
        VirtualServer,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("virtual SIP server"),
    )
    trunk = models.ForeignKey(
        Trunk, on_delete=models.CASCADE, related_name="dids", verbose_name=_("trunk")
    )
    number = models.CharField(_("number"), max_length=32, validators=[digits])
    # Deleting the user deletes the DID: a call to it then goes to the default user.
    user = models.ForeignKey(
        LocalUser, on_delete=models.CASCADE, related_name="+", verbose_name=_("local user")
    )

    class Meta:
        ordering = ["trunk", "number"]
        verbose_name = _("DID")
        verbose_name_plural = _("DIDs")
        constraints = [
            models.UniqueConstraint(fields=["server", "number"], name="trunkdid_unique_number"),
        ]

    def __str__(self) -> str:
        return f"{self.number} = {self.user_id}"


class DialRule(models.Model):
    """A dial-plan rule: numbers dialled with this prefix go this way (longest prefix
    wins, before the server's own numbers; `sipnodes.engine.dialplan`)."""

    class Route(models.TextChoices):
        LOCAL_USER = "local_user", _("Local user")
        SIP_TRUNK = "sip_trunk", _("SIP trunk")

    server = models.ForeignKey(
        VirtualServer,
        on_delete=models.CASCADE,
        related_name="dial_rules",
        verbose_name=_("virtual SIP server"),
    )
    prefix = models.CharField(_("prefix"), max_length=32, validators=[digits])
    route = models.CharField(
        _("route"), max_length=10, choices=Route.choices, default=Route.SIP_TRUNK
    )
    # RESTRICT, not PROTECT: a trunk in use cannot be deleted alone (the service says why),
    # but its server can, rules and all.
    trunk = models.ForeignKey(
        Trunk,
        on_delete=models.RESTRICT,
        null=True,
        blank=True,
        related_name="dial_rules",
        verbose_name=_("trunk"),
    )
    strip = models.PositiveSmallIntegerField(
        _("digits to strip"),
        default=0,
        validators=[MaxValueValidator(32)],
        help_text=_("How many leading digits to remove from the dialled number"),
    )
    add = models.CharField(
        _("digits to add"),
        max_length=32,
        blank=True,
        validators=[optional_digits],
        help_text=_("Put before the number once the digits are stripped"),
    )
    call_level = models.PositiveSmallIntegerField(
        _("minimum call level"),
        default=0,
        validators=[MaxValueValidator(CALL_LEVELS[-1])],
        help_text=_("Callers with a lower call level (0-9) are refused"),
    )
    # Set when a branch network made the rule: it is then changed only through the network.
    branch_network = models.ForeignKey(
        "BranchNetwork",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        editable=False,
        related_name="dial_rules",
        verbose_name=_("branch network"),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["server", "prefix"]
        verbose_name = _("dial-plan rule")
        verbose_name_plural = _("dial-plan rules")
        constraints = [
            models.UniqueConstraint(fields=["server", "prefix"], name="dialrule_unique_prefix"),
            models.CheckConstraint(
                condition=models.Q(route="sip_trunk", trunk__isnull=False)
                | models.Q(route="local_user", trunk__isnull=True),
                name="dialrule_trunk_iff_sip_trunk",
                violation_error_message=_("Choose the trunk these calls go to."),
            ),
            models.CheckConstraint(
                condition=models.Q(call_level__lte=CALL_LEVELS[-1]),
                name="dialrule_call_level_0_9",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix} → {self.route}"


class BranchNetwork(models.Model):
    """Servers of one tenant that call each other by prefix through a trunk server
    (docs/trunks.md, "Branch networks"). `branch_services` makes the trunks and rules
    on every server from it; they point back here (`branch_network`) and go with it."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="branch_networks", verbose_name=_("tenant")
    )
    name = models.CharField(_("name"), max_length=80)
    trunk_server = models.ForeignKey(
        VirtualServer,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("trunk server"),
        help_text=_("Every call between branches goes through this server"),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        verbose_name = _("branch network")
        verbose_name_plural = _("branch networks")
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="branchnetwork_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class BranchNetworkMember(models.Model):
    """A branch server of a network and the prefix the other branches dial it with."""

    network = models.ForeignKey(
        BranchNetwork,
        on_delete=models.CASCADE,
        related_name="members",
        verbose_name=_("branch network"),
    )
    server = models.ForeignKey(
        VirtualServer,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("branch server"),
    )
    prefix = models.CharField(_("prefix"), max_length=16, validators=[digits])

    class Meta:
        ordering = ["network", "prefix"]
        verbose_name = _("branch")
        verbose_name_plural = _("branches")
        constraints = [
            models.UniqueConstraint(
                fields=["network", "server"], name="branchmember_unique_server"
            ),
            models.UniqueConstraint(
                fields=["network", "prefix"], name="branchmember_unique_prefix"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix} = {self.server_id}"


class Cdr(models.Model):
    """A call detail record written by a virtual server's O-side; unique by its UUID.

    The columns are the fields of the CDR event, `sipnodes.engine.events.CdrData`
    (its times as datetimes: `sipnodes.ingest.parse.cdr_columns`).
    """

    uuid = models.UUIDField(_("UUID"), unique=True)
    server = models.ForeignKey(
        VirtualServer,
        on_delete=models.CASCADE,
        related_name="cdrs",
        verbose_name=_("virtual SIP server"),
    )
    call_id = models.CharField(_("Call-ID"), max_length=255)
    caller = models.CharField(_("caller number"), max_length=64)
    dialed = models.CharField(_("dialed number"), max_length=64)
    callee = models.CharField(_("callee number"), max_length=64, blank=True)
    route = models.CharField(_("route"), max_length=32, blank=True)
    started_at = models.DateTimeField(_("start"))
    ring_at = models.DateTimeField(_("ring"), null=True, blank=True)
    answered_at = models.DateTimeField(_("answer"), null=True, blank=True)
    released_at = models.DateTimeField(_("release"), null=True, blank=True)
    talk_seconds = models.PositiveIntegerField(_("talk seconds"), default=0)
    released_by = models.CharField(_("released by"), max_length=10, blank=True)
    status = models.PositiveSmallIntegerField(
        _("SIP status"), help_text=_("Final SIP status given to the caller")
    )
    answered = models.BooleanField(_("answered"))
    fci = models.CharField(_("FCI"), max_length=255)
    cause = models.PositiveSmallIntegerField(
        _("cause"), null=True, blank=True, help_text=_("Q.850 cause")
    )
    call_tag = models.PositiveSmallIntegerField(_("call tag"), null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        verbose_name = _("CDR")
        verbose_name_plural = _("CDRs")
        indexes = [
            # The Basic and Failed calls tables: one server's answered or unanswered calls,
            # newest first, read page by page from a (started_at, id) cursor.
            models.Index(fields=["server", "answered", "-started_at", "-id"], name="cdr_table_idx"),
            models.Index(
                fields=["server", "answered", "cause", "-started_at", "-id"],
                name="cdr_table_cause_idx",
            ),
            # The number filter: caller, dialed or callee.
            models.Index(
                fields=["server", "answered", "caller", "-started_at"], name="cdr_caller_idx"
            ),
            models.Index(
                fields=["server", "answered", "dialed", "-started_at"], name="cdr_dialed_idx"
            ),
            models.Index(
                fields=["server", "answered", "callee", "-started_at"], name="cdr_callee_idx"
            ),
            # Retention deletes the oldest first.
            models.Index(fields=["started_at"], name="cdr_started_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.caller} -> {self.dialed} ({self.fci})"


DEFAULT_CDR_RETENTION_DAYS = 7


class EditionPolicy(models.Model):
    """What an edition entitles a server to beyond its client limit; operators edit it.

    An edition without a row gets the defaults.
    """

    edition = models.PositiveIntegerField(
        _("edition"), choices=VirtualServer.Edition.choices, unique=True
    )
    cdr_retention_days = models.PositiveSmallIntegerField(
        _("CDR retention (days)"),
        default=DEFAULT_CDR_RETENTION_DAYS,
        validators=[MinValueValidator(1), MaxValueValidator(3660)],
        help_text=_("CDRs older than this are deleted by a periodic task"),
    )

    class Meta:
        ordering = ["edition"]
        verbose_name = _("edition policy")
        verbose_name_plural = _("edition policies")

    def __str__(self) -> str:
        return str(self.get_edition_display())
