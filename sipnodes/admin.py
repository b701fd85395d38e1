from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from sipnodes import services
from sipnodes.models import Cdr, LocalUser, PortAllocation, SipHost, VirtualServer
from sipnodes.provisioning import apply_on_commit


@admin.register(SipHost)
class SipHostAdmin(admin.ModelAdmin):
    list_display = ("name", "public_address", "agent", "last_seen_at", "status_detail")
    search_fields = ("name", "public_address")
    readonly_fields = ("last_seen_at", "status_detail")

    @admin.display(description="node agent")
    def agent(self, host: SipHost) -> str:
        if host.is_reachable:
            return "reporting"
        if host.last_seen_at is None:
            return "unreachable: its node agent has never reported"
        return f"unreachable: no report since {host.last_seen_at:%Y-%m-%d %H:%M:%S}"


class LocalUserInline(admin.TabularInline):
    model = LocalUser
    extra = 0
    fields = ("number", "display_name", "call_level")
    readonly_fields = ("number",)


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
    list_filter = ("edition", "actual_state", "desired_state", "host")
    search_fields = ("name", "tenant__name", "realm")
    readonly_fields = (
        "realm",
        "host",
        "sip_port",
        "callback_port",
        "media_port_first",
        "media_port_last",
        "desired_state",
        "actual_state",
        "state_detail",
        "state_checked_at",
        "restart_count",
        "registered_clients",
        "last_registration_at",
        "last_call_at",
    )
    inlines = [LocalUserInline]
    actions = ["start_servers", "stop_servers", "restart_servers"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # servers are created by signup, which allocates their ports

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        apply_on_commit(form.instance)

    @admin.action(description="Start the selected servers")
    def start_servers(self, request: HttpRequest, queryset: QuerySet[VirtualServer]) -> None:
        for server in queryset.select_related("host"):
            services.server_set_desired_state(server=server, state=VirtualServer.State.RUNNING)

    @admin.action(description="Stop the selected servers")
    def stop_servers(self, request: HttpRequest, queryset: QuerySet[VirtualServer]) -> None:
        for server in queryset.select_related("host"):
            services.server_set_desired_state(server=server, state=VirtualServer.State.STOPPED)

    @admin.action(description="Restart the selected servers")
    def restart_servers(self, request: HttpRequest, queryset: QuerySet[VirtualServer]) -> None:
        for server in queryset.select_related("host"):
            services.server_restart(server=server)


@admin.register(LocalUser)
class LocalUserAdmin(admin.ModelAdmin):
    list_display = ("number", "display_name", "server", "call_level")
    search_fields = ("number", "display_name", "server__name")
    exclude = ("ha1_md5", "ha1_sha256")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a new user needs a password, issued once in the tenant pages

    def save_model(self, request: HttpRequest, obj: LocalUser, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        apply_on_commit(obj.server)


@admin.register(PortAllocation)
class PortAllocationAdmin(admin.ModelAdmin):
    list_display = ("host", "port", "purpose", "server")
    list_filter = ("purpose", "host")
    search_fields = ("port", "server__name")


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
