"""The operator's pages for hosts, servers and their users (Django admin).

Every change goes through `sipnodes.services`, which hands it to the host's agent once
committed; nothing here writes a server's ports or edition, or talks to a host, itself.
"""

from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminDateWidget
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from config.timezones import zoned_datetime
from sipnodes import branch_services, selectors, services, trunk_services
from sipnodes.models import (
    Cdr,
    EditionPolicy,
    LocalUser,
    PortAllocation,
    SipHost,
    Trunk,
    TrunkDid,
    VirtualServer,
)

# The server fields an operator edits on its page, besides SYSTEM_SETTINGS.
CALLBACK_FIELDS = ("callback_app_server_address", "callback_default_caller")
# What the host and the event stream report: shown to operators, never edited.
STATE_FIELDS = (
    "desired_state",
    "awaiting_verification",
    "actual_state",
    "state_detail",
    "state_checked_at",
    "restart_count",
    "registered_clients",
    "registered_clients_at",
    "last_registration_at",
    "last_call_at",
)


@admin.register(SipHost)
class SipHostAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "public_address",
        "behind_router",
        "router_external_address",
        "agent",
        "last_seen_at",
        "status_detail",
    )
    list_filter = ("behind_router",)
    search_fields = ("name", "public_address")
    readonly_fields = ("last_seen_at", "status_detail", "router_external_address")

    def save_model(self, request: HttpRequest, obj: SipHost, form: Any, change: bool) -> None:
        """Branch network trunks to the host's servers follow a new public address."""
        super().save_model(request, obj, form, change)
        if change and "public_address" in form.changed_data:
            branch_services.host_address_changed(host=obj)

    @admin.display(description=gettext_lazy("node agent"))
    def agent(self, host: SipHost) -> str:
        if host.is_reachable:
            return _("reporting")
        if host.last_seen_at is None:
            return _("unreachable: its node agent has never reported")
        return _("unreachable: no report since %(time)s") % {
            "time": zoned_datetime(host.last_seen_at)
        }


class LocalUserInline(admin.TabularInline):
    model = LocalUser
    extra = 0
    fields = ("number", "display_name", "call_level")
    readonly_fields = ("number",)

    def has_add_permission(self, request: HttpRequest, obj: VirtualServer | None = None) -> bool:
        return False  # a new user needs a password, issued once in the tenant pages


class EditionForm(forms.Form):
    edition = forms.TypedChoiceField(
        label=gettext_lazy("edition"), choices=VirtualServer.Edition.choices, coerce=int
    )
    paid_until = forms.DateField(
        required=False,
        widget=AdminDateWidget,
        label=gettext_lazy("paid until"),
        help_text=gettext_lazy(
            "Paid editions only; when it passes, the server falls back to 5 clients."
        ),
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "edition" in cleaned and not self.errors:
            try:
                services.edition_validate(
                    edition=cleaned["edition"], paid_until=cleaned.get("paid_until")
                )
            except services.EditionChangeRefused as exc:
                raise forms.ValidationError(str(exc)) from exc
        return cleaned


@admin.register(VirtualServer)
class VirtualServerAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "tenant",
        "host",
        "sip_port",
        "edition",
        "desired_state",
        "actual_state",
        "restart_count",
        "registered_clients",
        "last_registration_at",
        "last_call_at",
    )
    list_filter = ("edition", "actual_state", "desired_state", "digest_algorithms", "host")
    search_fields = ("name", "tenant__name", "realm")
    fieldsets = (
        (None, {"fields": ("name", "tenant", "edition_and_payment", "host", "realm")}),
        (
            gettext_lazy("Ports"),
            {"fields": ("sip_port", "callback_port", "media_port_first", "media_port_last")},
        ),
        (
            gettext_lazy("System settings"),
            {"fields": [f for f in services.SYSTEM_SETTINGS if f != "name"]},
        ),
        (gettext_lazy("Call-back"), {"fields": CALLBACK_FIELDS}),
        (gettext_lazy("State"), {"fields": STATE_FIELDS}),
    )
    readonly_fields = (
        "tenant",
        "edition_and_payment",
        "realm",
        "host",
        "sip_port",
        "callback_port",
        "media_port_first",
        "media_port_last",
        *STATE_FIELDS,
    )
    inlines = [LocalUserInline]
    actions = ["start_servers", "stop_servers", "restart_servers"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # servers are created by signup, which allocates their ports

    @admin.display(description=gettext_lazy("edition"))
    def edition_and_payment(self, server: VirtualServer) -> str:
        edition = server.get_edition_display()
        if server.paid_until:
            edition = _("%(edition)s, paid until %(date)s") % {
                "edition": edition,
                "date": server.paid_until.isoformat(),
            }
        return format_html(
            '{} · <a id="change-edition" href="{}">{}</a>',
            edition,
            reverse("admin:sipnodes_virtualserver_edition", args=[server.pk]),
            _("Change the edition"),
        )

    def save_model(
        self, request: HttpRequest, obj: VirtualServer, form: forms.ModelForm, change: bool
    ) -> None:
        """Each changed group of fields goes to the service that owns it."""
        changed = set(form.changed_data)
        settings = {f: form.cleaned_data[f] for f in services.SYSTEM_SETTINGS if f in changed}
        if settings:
            services.server_update_settings(server=obj, **settings)
        if changed.intersection(CALLBACK_FIELDS):
            services.server_update_callback(
                server=obj,
                app_server_address=obj.callback_app_server_address,
                port=obj.callback_port,
                default_caller=obj.callback_default_caller,
            )

    def save_formset(
        self, request: HttpRequest, form: forms.ModelForm, formset: BaseInlineFormSet, change: bool
    ) -> None:
        """Local users are changed or deleted here; they are added in the tenant pages."""
        for user in formset.save(commit=False):
            services.local_user_update(
                user=user, display_name=user.display_name, call_level=user.call_level
            )
        for user in formset.deleted_objects:
            services.local_user_delete(user=user)

    def get_deleted_objects(
        self, objs: Sequence[VirtualServer], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """A server's ports go with it, though the ledger is read-only row by row."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(PortAllocation._meta.verbose_name)
        return deleted, counts, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: VirtualServer) -> None:
        services.server_delete(server=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[VirtualServer]) -> None:
        for server in queryset.select_related("host"):
            services.server_delete(server=server)

    def get_urls(self) -> list[URLPattern]:
        edition = path(
            "<path:object_id>/edition/",
            self.admin_site.admin_view(self.edition_view),
            name="sipnodes_virtualserver_edition",
        )
        return [edition, *super().get_urls()]

    def edition_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Change a server's edition: first show what will happen, then do exactly that."""
        server = self.get_object(request, object_id)
        if server is None:
            raise Http404(_("no such server"))
        if not self.has_change_permission(request, server):
            raise PermissionDenied
        form = EditionForm(
            request.POST or None,
            initial={"edition": server.edition, "paid_until": server.paid_until},
        )
        preview = None
        if request.method == "POST" and form.is_valid():
            edition, paid_until = form.cleaned_data["edition"], form.cleaned_data["paid_until"]
            if "_confirm" in request.POST:
                try:
                    change = services.server_change_edition(
                        server=server, edition=edition, paid_until=paid_until
                    )
                except services.EditionChangeRefused as exc:
                    form.add_error(None, str(exc))
                else:
                    level = messages.WARNING if change.limit_reached else messages.SUCCESS
                    self.message_user(request, " ".join(change.consequences), level)
                    self.log_change(
                        request,
                        server,
                        _("Edition %(old)s to %(new)s clients.")
                        % {"old": change.old_edition, "new": change.new_edition},
                    )
                    return redirect("admin:sipnodes_virtualserver_change", server.pk)
            preview = selectors.server_edition_change(server=server, edition=edition)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Edition of %(server)s") % {"server": server},
            "opts": self.opts,
            "original": server,
            "form": form,
            "clients": selectors.server_clients(server=server),
            "preview": preview,
        }
        return TemplateResponse(request, "admin/sipnodes/virtualserver/edition.html", context)

    @admin.action(description=gettext_lazy("Start the selected servers"))
    def start_servers(self, request: HttpRequest, queryset: QuerySet[VirtualServer]) -> None:
        for server in queryset.select_related("host"):
            services.server_set_desired_state(server=server, state=VirtualServer.State.RUNNING)

    @admin.action(description=gettext_lazy("Stop the selected servers"))
    def stop_servers(self, request: HttpRequest, queryset: QuerySet[VirtualServer]) -> None:
        for server in queryset.select_related("host"):
            services.server_set_desired_state(server=server, state=VirtualServer.State.STOPPED)

    @admin.action(description=gettext_lazy("Restart the selected servers"))
    def restart_servers(self, request: HttpRequest, queryset: QuerySet[VirtualServer]) -> None:
        for server in queryset.select_related("host"):
            services.server_restart(server=server)


@admin.register(LocalUser)
class LocalUserAdmin(admin.ModelAdmin):
    list_display = ("number", "display_name", "server", "call_level")
    search_fields = ("number", "display_name", "server__name")
    fields = ("server", "number", "display_name", "call_level")
    readonly_fields = ("server", "number")  # the number is part of the stored digests

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a new user needs a password, issued once in the tenant pages

    def save_model(
        self, request: HttpRequest, obj: LocalUser, form: forms.ModelForm, change: bool
    ) -> None:
        services.local_user_update(
            user=obj, display_name=obj.display_name, call_level=obj.call_level
        )

    def delete_model(self, request: HttpRequest, obj: LocalUser) -> None:
        services.local_user_delete(user=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[LocalUser]) -> None:
        for user in queryset.select_related("server__host"):
            services.local_user_delete(user=user)


@admin.register(PortAllocation)
class PortAllocationAdmin(admin.ModelAdmin):
    """Read-only: the ledger is written by the services that hand out and free ports."""

    list_display = ("host", "port", "purpose", "server")
    list_filter = ("purpose", "host")
    search_fields = ("port", "server__name")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: PortAllocation | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: PortAllocation | None = None
    ) -> bool:
        return False


@admin.register(Cdr)
class CdrAdmin(admin.ModelAdmin):
    """Read-only: CDRs are written by the ingest consumer alone."""

    list_display = (
        "started_at",
        "server",
        "caller",
        "dialed",
        "callee",
        "answered",
        "talk_seconds",
        "status",
        "fci",
    )
    list_filter = ("answered", "cause")
    search_fields = ("caller", "dialed", "call_id")
    date_hierarchy = "started_at"
    list_select_related = ("server",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Cdr | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Cdr | None = None) -> bool:
        return False


@admin.register(EditionPolicy)
class EditionPolicyAdmin(admin.ModelAdmin):
    """What each edition entitles a server to; the retention task reads it on every run."""

    list_display = ("edition", "cdr_retention_days")
    list_editable = ("cdr_retention_days",)


class TrunkDidInline(admin.TabularInline):
    model = TrunkDid
    fields = ("number", "user")
    readonly_fields = ("number", "user")
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: Trunk | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Trunk | None = None) -> bool:
        return False


@admin.register(Trunk)
class TrunkAdmin(admin.ModelAdmin):
    """Read-only but for deleting: tenants set trunks up in their pages. The password is
    not a field of any form (`editable=False`), and is shown only as set or not set."""

    list_display = ("name", "server", "address", "port", "transport", "mode", "state")
    list_filter = ("mode", "state", "transport")
    search_fields = ("name", "address", "server__name")
    list_select_related = ("server",)
    fields = (
        "server",
        "name",
        "address",
        "port",
        "transport",
        "mode",
        "username",
        "auth_username",
        "password_set",
        "realm",
        "expires",
        "caller_id",
        "caller_prefix",
        "inbound",
        "default_user",
        "branch_network",
        "state",
        "state_reason",
        "state_at",
        "last_attempt_at",
        "next_attempt_at",
    )
    readonly_fields = fields
    inlines = [TrunkDidInline]

    @admin.display(description=gettext_lazy("password"))
    def password_set(self, trunk: Trunk) -> str:
        return _("set") if trunk.has_password else _("not set")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Trunk | None = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: Trunk) -> None:
        try:
            trunk_services.trunk_delete(trunk=obj)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Trunk]) -> None:
        for trunk in queryset.select_related("server__host"):
            self.delete_model(request, trunk)
