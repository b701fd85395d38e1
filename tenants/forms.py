import re
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import PasswordResetForm
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from config.timezones import is_time_zone, time_zone_names
from sipnodes.branch_selectors import network_prefixes, tenant_servers
from sipnodes.cdr_selectors import CdrFilter
from sipnodes.cdr_texts import cause_choices
from sipnodes.engine.config import FEATURES, FeatureCodes
from sipnodes.feature_texts import FEATURE_TEXTS
from sipnodes.features_selectors import hunt_group_member_numbers, number_holder
from sipnodes.features_services import CALL_SETTINGS
from sipnodes.models import (
    CALL_LEVELS,
    HUNT_TIMEOUT_SECONDS,
    NO_ANSWER_SECONDS,
    PICKUP_GROUPS,
    RING_SECONDS,
    TRUNK_EXPIRES_SECONDS,
    TRUNK_PORTS,
    BranchNetwork,
    BranchNetworkMember,
    DialRule,
    HuntGroup,
    LocalUser,
    Trunk,
    VirtualServer,
    callback_secret_format,
    digits,
    feature_code_chars,
)
from sipnodes.selectors import server_local_users
from sipnodes.services import SYSTEM_SETTINGS
from sipnodes.trunk_selectors import (
    dial_rule_warnings,
    out_group_prefix_warnings,
    server_own_trunks,
    trunk_did_lines,
)
from tenants.models import Tenant, User


def clean_time_zone_name(name: str) -> str:
    if not is_time_zone(name):
        raise forms.ValidationError(
            _("%(zone)s is not a time zone we know."), params={"zone": name}
        )
    return name


class SignupForm(forms.Form):
    email = forms.EmailField(label=_("E-mail address"))
    password = forms.CharField(label=_("Password"), widget=forms.PasswordInput, strip=False)
    company_name = forms.CharField(label=_("Company name"), max_length=120)
    accept_terms = forms.BooleanField(
        label=_(
            "I accept that the free 5-client edition is for non-commercial use only "
            "and comes without warranty."
        ),
        error_messages={"required": _("You must accept the free edition's non-commercial terms.")},
    )
    # Filled in by the page's script with the browser's zone; without it the tenant gets
    # the platform's default zone (SIPCLOUD_DEFAULT_TIME_ZONE), changeable later.
    time_zone = forms.CharField(widget=forms.HiddenInput, required=False, max_length=64)

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(_("An account with this e-mail address already exists."))
        return email

    def clean_time_zone(self) -> str:
        name = self.cleaned_data["time_zone"] or settings.SIPCLOUD_DEFAULT_TIME_ZONE
        return clean_time_zone_name(name)

    def clean(self) -> dict:
        cleaned = super().clean()
        password = cleaned.get("password")
        if password:
            probe = User(email=cleaned.get("email", ""), username=cleaned.get("email", ""))
            try:
                validate_password(password, probe)
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return cleaned


class AccountForm(forms.Form):
    """The tenant's time zone; owners and admins change it, viewers read it."""

    time_zone = forms.ChoiceField(
        label=_("Time zone"),
        help_text=_("Every time the portal shows your team is on this clock."),
    )

    def __init__(self, *args: Any, can_change: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["time_zone"].choices = [(name, name) for name in sorted(time_zone_names())]
        self.fields["time_zone"].disabled = not can_change


class ConfirmWarningsMixin:
    """A `confirm` box ("I understand") shown only once there is something to confirm:
    a change with warnings is refused until it is ticked, the warnings shown on it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["confirm"] = forms.BooleanField(  # type: ignore[attr-defined]
            label=_("I have read the warning and want this anyway"),
            required=False,
            widget=forms.HiddenInput,
        )

    def show_confirm(self) -> None:
        self.fields["confirm"].widget = forms.CheckboxInput()  # type: ignore[attr-defined]

    def warn(self, warnings: list[str]) -> None:
        """Refuse the change with `warnings` unless the box is ticked; show the box."""
        if warnings:
            self.show_confirm()
            if not self.cleaned_data.get("confirm"):  # type: ignore[attr-defined]
                for warning in warnings:
                    self.add_error("confirm", warning)  # type: ignore[attr-defined]

    def add_error(self, field: str | None, error: Any) -> None:
        """A service's refusal on `confirm` (a rule taken meanwhile) shows the box too."""
        super().add_error(field, error)  # type: ignore[misc]
        if "confirm" in self.errors:  # type: ignore[attr-defined]
            self.show_confirm()


class SystemSettingsForm(ConfirmWarningsMixin, forms.ModelForm):
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        prefix = cleaned.get("out_group_prefix")
        if prefix and "out_group_prefix" in self.changed_data:
            self.warn(out_group_prefix_warnings(server=self.instance, out_group_prefix=prefix))
        return cleaned

    class Meta:
        model = VirtualServer
        fields = list(SYSTEM_SETTINGS)
        help_texts = {
            "out_group_prefix": _("Dial this prefix before a number to use the external line."),
            "media_relay": _("Relay RTP through the server so phones behind NAT hear each other."),
            "upnp": _("Ask the router in front of the SIP host to forward ports."),
            "cdr_failed_calls": _("Off: unanswered calls write no CDR."),
            "cdr_realtime_display": _("Off: the live calls view shows nothing."),
        }
        # Three choices, each with its consequence in the help text: all in view at once.
        widgets = {"digest_algorithms": forms.RadioSelect}


class CallbackSettingsForm(forms.Form):
    """The call-back settings. The shared secret is never shown: it is kept, generated,
    replaced by a pasted one or removed (`secret_action`)."""

    KEEP, GENERATE, PASTE, CLEAR = "keep", "generate", "paste", "clear"

    app_server_address = forms.GenericIPAddressField(
        label=_("Application server address"),
        required=False,
        help_text=_(
            "Only call-back requests from this address are accepted. Leave it blank only if "
            "you must: then anyone on the Internet can make your server place calls."
        ),
    )
    port = forms.IntegerField(
        label=_("Local listen port"),
        min_value=0,
        max_value=65535,
        help_text=_("0 closes the call-back service: the port is not opened at all."),
    )
    default_caller = forms.RegexField(
        label=_("Default caller number"),
        regex=r"^[0-9]*$",
        max_length=32,
        required=False,
        error_messages={"invalid": _("Use digits only.")},
        help_text=_("Shown to the first callee when the request names no caller."),
    )
    secret_action = forms.ChoiceField(
        label=_("Shared secret"),
        widget=forms.RadioSelect,
        required=False,
        help_text=_(
            "With a secret, the application server signs every request with it, so that "
            "nobody else can make your server place calls, even from its address."
        ),
    )
    new_secret = forms.CharField(
        label=_("Secret to use"),
        required=False,
        max_length=128,
        validators=[callback_secret_format],
        # Never rendered back, not even after an error in another field.
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text=_("16 to 128 letters, digits or punctuation marks, without spaces."),
    )

    def __init__(self, *args: Any, has_secret: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keep = _("Keep the current secret") if has_secret else _("No secret")
        choices = [
            (self.KEEP, keep),
            (self.GENERATE, _("Generate a new secret")),
            (self.PASTE, _("Use the secret entered below")),
        ]
        if has_secret:
            choices.append((self.CLEAR, _("Remove the secret")))
        self.fields["secret_action"].choices = choices
        self.fields["secret_action"].initial = self.KEEP

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("secret_action") == self.PASTE and not cleaned.get("new_secret"):
            self.add_error("new_secret", _("Enter the secret to use, or choose another option."))
        return cleaned


class LocalUserForm(forms.ModelForm):
    class Meta:
        model = LocalUser
        fields = ["number", "display_name", "call_level"]

    def __init__(self, *args, server: VirtualServer, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.server = server
        if self.instance.pk:
            self.fields["number"].disabled = True

    def clean_number(self) -> str:
        number = self.cleaned_data["number"]
        holder = number_holder(
            server=self.server,
            number=number,
            except_user=self.instance if self.instance.pk else None,
        )
        if isinstance(holder, LocalUser):
            raise forms.ValidationError(
                _("User %(number)s already exists on this server."), params={"number": number}
            )
        if isinstance(holder, HuntGroup):
            raise forms.ValidationError(
                _("%(number)s is already the number of hunt group %(name)s."),
                params={"number": number, "name": holder.name},
            )
        return number


def _bounds(values: range) -> dict[str, int]:
    """The browser's own check of a number field, as the model's validators check it."""
    return {"min": values.start, "max": values[-1]}


class CallSettingsForm(forms.ModelForm):
    """A user's DND, forwarding and pickup group; the phone changes some of them too."""

    # When the settings shown were last changed: saving over a newer change is refused.
    seen_changed = forms.CharField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = LocalUser
        fields = list(CALL_SETTINGS)
        help_texts = {
            "forward_unconditional": _("Every call goes there; the user's phones do not ring."),
            "forward_busy": _("When the user is on a call, or on do not disturb."),
            "forward_no_answer": _("When the user's phones ring for the ring time unanswered."),
            "forward_unreachable": _("When no phone of the user is registered or responds."),
        }
        widgets = {
            "no_answer_seconds": forms.NumberInput(attrs=_bounds(NO_ANSWER_SECONDS)),
            "pickup_group": forms.NumberInput(attrs=_bounds(PICKUP_GROUPS)),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        changed = self.instance.call_settings_changed
        self.fields["seen_changed"].initial = changed.isoformat() if changed else ""

    def clean_seen_changed(self) -> datetime | None:
        value = self.cleaned_data["seen_changed"]
        try:
            return datetime.fromisoformat(value) if value else None
        except ValueError:
            raise forms.ValidationError(_("Open the page again and save from there.")) from None


MEMBER_SEPARATORS = re.compile(r"[\s,;]+")


class HuntGroupForm(forms.ModelForm):
    """A hunt group and its members, typed as numbers in ring order: only this server's
    local users can be named, so no other server's user can be posted."""

    members = forms.CharField(
        label=_("Members, in ring order"),
        help_text=_("Numbers of this server's local users, separated by spaces or commas."),
    )

    class Meta:
        model = HuntGroup
        fields = ["number", "name", "mode", "members", "ring_seconds", "timeout", "overflow"]
        widgets = {
            "mode": forms.RadioSelect,
            "ring_seconds": forms.NumberInput(attrs=_bounds(RING_SECONDS)),
            "timeout": forms.NumberInput(attrs=_bounds(HUNT_TIMEOUT_SECONDS)),
        }

    def __init__(self, *args: Any, server: VirtualServer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.server = server
        self.users = {user.number: user for user in server_local_users(server=server)}
        if self.instance.pk:
            self.fields["members"].initial = " ".join(
                hunt_group_member_numbers(group=self.instance)
            )

    def clean_members(self) -> list[LocalUser]:
        numbers = [n for n in MEMBER_SEPARATORS.split(self.cleaned_data["members"]) if n]
        unknown = [n for n in numbers if n not in self.users]
        if unknown:
            raise forms.ValidationError(
                _("This server has no local user %(numbers)s."),
                params={"numbers": ", ".join(unknown)},
            )
        twice = sorted({n for n in numbers if numbers.count(n) > 1})
        if twice:
            raise forms.ValidationError(
                _("Each member may be listed once: %(numbers)s is listed more than once."),
                params={"numbers": ", ".join(twice)},
            )
        return [self.users[n] for n in numbers]


class FeatureCodesForm(forms.Form):
    """The server's code for every feature, prefilled with the codes in force."""

    def __init__(self, *args: Any, codes: FeatureCodes, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for feature in FEATURES:
            self.fields[feature] = forms.CharField(
                label=FEATURE_TEXTS[feature][0],
                max_length=16,
                initial=getattr(codes, feature),
                validators=[feature_code_chars],
            )


DID_LINE = re.compile(r"^\s*(?P<number>\S+?)\s*(?:=|\s)\s*(?P<user>\S+)\s*$")


class TrunkForm(forms.ModelForm):
    """A trunk with its DIDs, typed one `number = user` a line. The password is never
    rendered: it is set, replaced by typing a new one, or cleared."""

    password = forms.CharField(
        label=_("Password"),
        required=False,
        strip=False,
        max_length=128,
        # Never rendered back, not even after an error in another field.
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}, render_value=False),
    )
    clear_password = forms.BooleanField(label=_("Remove the stored password"), required=False)
    dids = forms.CharField(
        label=_("DIDs"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "85550100 = 100"}),
        help_text=_(
            "Inbound numbers of this trunk and the local user each rings, one a line, "
            "for example 85550100 = 100."
        ),
    )

    field_order = [
        "name",
        "address",
        "port",
        "transport",
        "mode",
        "username",
        "auth_username",
        "password",
        "clear_password",
        "realm",
        "expires",
        "caller_id",
        "caller_prefix",
        "inbound",
        "dids",
        "default_user",
    ]

    class Meta:
        model = Trunk
        fields = [
            "name",
            "address",
            "port",
            "transport",
            "mode",
            "username",
            "auth_username",
            "realm",
            "expires",
            "caller_id",
            "caller_prefix",
            "inbound",
            "default_user",
        ]
        widgets = {
            "transport": forms.RadioSelect,
            "mode": forms.RadioSelect,
            "inbound": forms.RadioSelect,
        }

    def __init__(self, *args: Any, server: VirtualServer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.server = server
        # After the form field's own bounds (a positive integer's min 0), which it sets last.
        self.fields["port"].widget.attrs.update(_bounds(TRUNK_PORTS))
        self.fields["expires"].widget.attrs.update(_bounds(TRUNK_EXPIRES_SECONDS))
        self.users = {user.number: user for user in server_local_users(server=server)}
        default_user = self.fields["default_user"]
        default_user.queryset = server_local_users(server=server)  # type: ignore[attr-defined]
        default_user.empty_label = _("None: such calls are refused")  # type: ignore[attr-defined]
        has_password = bool(self.instance.pk and self.instance.password)
        self.fields["password"].help_text = (
            _("Set; it is not shown again. Type a new one to replace it.")
            if has_password
            else _("Not set. Registration needs one.")
        )
        if has_password:
            self.fields["password"].label = _("New password")
        else:
            del self.fields["clear_password"]
        if self.instance.pk:
            self.fields["dids"].initial = trunk_did_lines(trunk=self.instance)

    def clean_dids(self) -> list[tuple[str, LocalUser]]:
        dids = []
        for line in self.cleaned_data["dids"].splitlines():
            if not line.strip():
                continue
            match = DID_LINE.match(line)
            if not match or not match["number"].isdigit():
                raise forms.ValidationError(
                    _("Write each DID as number = user, for example 85550100 = 100: %(line)s"),
                    params={"line": line.strip()},
                )
            user = self.users.get(match["user"])
            if user is None:
                raise forms.ValidationError(
                    _("This server has no local user %(numbers)s."),
                    params={"numbers": match["user"]},
                )
            dids.append((match["number"], user))
        return dids

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("clear_password") and cleaned.get("password"):
            self.add_error("password", _("Type a new password or remove the stored one, not both."))
        return cleaned

    def password_change(self) -> str | None:
        """What the service is to do with the password: None keeps it, "" clears it."""
        if self.cleaned_data.get("clear_password"):
            return ""
        return self.cleaned_data["password"] or (None if self.instance.pk else "")


class ExternalLineForm(forms.Form):
    """The trunk the out-group prefix reaches."""

    external_line = forms.ModelChoiceField(
        label=_("External line"),
        queryset=Trunk.objects.none(),
        required=False,
        help_text=_("Numbers dialled with the out-group prefix go out on this trunk."),
    )

    def __init__(self, *args: Any, server: VirtualServer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["external_line"]
        field.queryset = server_own_trunks(server=server)  # type: ignore[attr-defined]
        field.empty_label = _("None")  # type: ignore[attr-defined]
        field.initial = server.external_line_id


class DialRuleForm(ConfirmWarningsMixin, forms.ModelForm):
    """A dial-plan rule; one that takes calls from local numbers or from the external line
    is saved only once its warning has been seen and confirmed."""

    class Meta:
        model = DialRule
        fields = ["prefix", "route", "trunk", "strip", "add", "call_level"]
        widgets = {
            "route": forms.RadioSelect,
            "call_level": forms.NumberInput(attrs=_bounds(CALL_LEVELS)),
        }

    def __init__(self, *args: Any, server: VirtualServer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.server = server
        self.server = server
        trunk = self.fields["trunk"]
        trunk.queryset = server_own_trunks(server=server)  # type: ignore[attr-defined]
        trunk.help_text = _("For the SIP trunk route: where the calls go.")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("route") == DialRule.Route.LOCAL_USER:
            cleaned["trunk"] = None  # a rule to a local user goes to no trunk
        if not self.errors:
            self.warn(
                dial_rule_warnings(
                    server=self.server,
                    prefix=cleaned["prefix"],
                    route=cleaned["route"],
                    strip=cleaned["strip"],
                    add=cleaned["add"],
                    call_level=cleaned["call_level"],
                )
            )
        return cleaned


class BranchNetworkForm(ConfirmWarningsMixin, forms.Form):
    """A branch network: its trunk server, and a prefix for each server of the tenant
    that is a branch. Only the tenant's servers are offered or taken (a field per
    server), so no other tenant's server can be posted."""

    PREFIX_FIELD = "prefix_%s"

    name = forms.CharField(label=_("Name"), max_length=80)
    trunk_server = forms.ModelChoiceField(
        label=_("Trunk server"),
        queryset=VirtualServer.objects.none(),
        help_text=_(
            "Every call between branches goes through this server. It is no branch itself."
        ),
    )

    def __init__(
        self, *args: Any, tenant: Tenant, network: BranchNetwork | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.servers = list(tenant_servers(tenant=tenant))
        self.fields["trunk_server"].queryset = tenant_servers(  # type: ignore[attr-defined]
            tenant=tenant
        )
        prefixes = network_prefixes(network=network) if network is not None else {}
        if network is not None:
            self.fields["name"].initial = network.name
            self.fields["trunk_server"].initial = network.trunk_server_id
        prefix = BranchNetworkMember._meta.get_field("prefix")
        for server in self.servers:
            self.fields[self.PREFIX_FIELD % server.pk] = forms.CharField(
                label=server.name,
                required=False,
                max_length=prefix.max_length,
                validators=[digits],
                initial=prefixes.get(server.pk, ""),
            )
        # The confirm box (ConfirmWarningsMixin) last, after the prefixes.
        self.fields["confirm"] = self.fields.pop("confirm")

    def prefix_rows(self) -> list[tuple[VirtualServer, forms.BoundField]]:
        """Each server of the tenant with its prefix field, for the form's table."""
        return [(server, self[self.PREFIX_FIELD % server.pk]) for server in self.servers]

    def members(self) -> list[tuple[VirtualServer, str]]:
        """The branches: the servers given a prefix."""
        found = []
        for server in self.servers:
            prefix = self.cleaned_data.get(self.PREFIX_FIELD % server.pk, "")
            if prefix:
                found.append((server, prefix))
        return found

    def add_error(self, field: str | None, error: Any) -> None:
        """The service's refusals about the branches ("members") are the form's own: they
        concern several prefix fields at once."""
        if field is None and isinstance(error, ValidationError) and hasattr(error, "error_dict"):
            by_field = dict(error.error_dict)
            if "members" in by_field:
                by_field.setdefault(NON_FIELD_ERRORS, []).extend(by_field.pop("members"))
            error = ValidationError(by_field)
        super().add_error(field, error)


class MemberPasswordResetForm(PasswordResetForm):
    """Writes the reset e-mail in the member's own language, not the requester's page's."""

    def send_mail(
        self,
        subject_template_name: str,
        email_template_name: str,
        context: dict[str, Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        with translation.override(context["user"].language or translation.get_language()):
            super().send_mail(subject_template_name, email_template_name, context, *args, **kwargs)


class CdrFilterForm(forms.Form):
    """The Basic and Failed calls filters; dates are days on the tenant's clock."""

    since = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    number = forms.RegexField(
        label=_("Number"),
        regex=r"^[0-9*#+]*$",
        max_length=64,
        required=False,
        help_text=_("Caller, dialed or callee number, exactly"),
        error_messages={"invalid": _("Use digits, *, # and + only.")},
    )
    cause = forms.TypedChoiceField(label=_("Cause"), required=False, coerce=int, empty_value=None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["cause"].choices = [("", _("Any cause")), *cause_choices()]

    def cdr_filter(self, zone: tzinfo) -> CdrFilter:
        """The filter the valid fields ask for; from `since` 00:00 to the end of `until`."""
        data = self.cleaned_data if self.is_valid() else {}

        def midnight(day: date | None, days_after: int = 0) -> datetime | None:
            if day is None:
                return None
            return datetime.combine(day + timedelta(days=days_after), time(), tzinfo=zone)

        return CdrFilter(
            since=midnight(data.get("since")),
            until=midnight(data.get("until"), 1),
            number=data.get("number") or "",
            cause=data.get("cause"),
        )
