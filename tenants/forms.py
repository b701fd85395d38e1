from django import forms
from django.contrib.auth.password_validation import validate_password

from sipnodes.models import LocalUser, VirtualServer
from sipnodes.services import SYSTEM_SETTINGS
from tenants.models import User


class SignupForm(forms.Form):
    email = forms.EmailField(label="E-mail address")
    password = forms.CharField(label="Password", widget=forms.PasswordInput, strip=False)
    company_name = forms.CharField(label="Company name", max_length=120)
    accept_terms = forms.BooleanField(
        label=(
            "I accept that the free 5-client edition is for non-commercial use only "
            "and comes without warranty."
        ),
        error_messages={"required": "You must accept the free edition's non-commercial terms."},
    )

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this e-mail address already exists.")
        return email

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


class SystemSettingsForm(forms.ModelForm):
    class Meta:
        model = VirtualServer
        fields = list(SYSTEM_SETTINGS)
        help_texts = {
            "out_group_prefix": "Dial this prefix before a number to use the external line.",
            "media_relay": "Relay RTP through the server so phones behind NAT hear each other.",
            "upnp": "Ask the router in front of the SIP host to forward ports.",
            "cdr_failed_calls": "Off: unanswered calls write no CDR.",
            "cdr_realtime_display": "Off: the live calls view shows nothing.",
        }
        # Three choices, each with its consequence in the help text: all in view at once.
        widgets = {"digest_algorithms": forms.RadioSelect}


class CallbackSettingsForm(forms.Form):
    app_server_address = forms.CharField(
        label="Application server address",
        max_length=255,
        required=False,
        help_text=(
            "Only call-back requests from this address are accepted. Leave it blank only if "
            "you must: then anyone on the Internet can make your server place calls."
        ),
    )
    port = forms.IntegerField(
        label="Local listen port",
        min_value=0,
        max_value=65535,
        help_text="0 closes the call-back service: the port is not opened at all.",
    )
    default_caller = forms.RegexField(
        label="Default caller number",
        regex=r"^[0-9]*$",
        max_length=32,
        required=False,
        error_messages={"invalid": "Use digits only."},
        help_text="Shown to the first callee when the request names no caller.",
    )


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
        taken = LocalUser.objects.filter(server=self.server, number=number)
        if self.instance.pk:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise forms.ValidationError(f"User {number} already exists on this server.")
        return number
