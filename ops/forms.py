from django import forms
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ops.models import PurgePolicy
from sipnodes.models import VirtualServer
from tenants.models import Tenant


class PolicyForm(forms.ModelForm):
    class Meta:
        model = PurgePolicy
        fields = ["inactivity_days", "cap_per_run", "notice_days", "grace_days", "paused"]


class ExemptionForm(forms.Form):
    KINDS = [("server", gettext_lazy("Server")), ("tenant", gettext_lazy("Tenant"))]

    kind = forms.ChoiceField(label=gettext_lazy("Exempt"), choices=KINDS)
    object_id = forms.IntegerField(label=gettext_lazy("Id"), min_value=1)
    reason = forms.CharField(label=gettext_lazy("Reason"), max_length=200)

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        model = VirtualServer if data["kind"] == "server" else Tenant
        found = model.objects.filter(pk=data["object_id"]).first()
        if found is None:
            raise forms.ValidationError(_("There is no such server or tenant."))
        if getattr(found, "purge_exemption", None) is not None:
            raise forms.ValidationError(_("It is exempt already."))
        data[data["kind"]] = found
        return data


class SecondFactorCodeForm(forms.Form):
    """A code from the operator's authenticator app, or one of their recovery codes."""

    code = forms.CharField(
        label=gettext_lazy("One-time code"),
        max_length=40,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "autofocus": True, "spellcheck": "false"}
        ),
    )
