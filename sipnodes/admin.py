from django.contrib import admin

from sipnodes.models import LocalUser, PortAllocation, SipHost, VirtualServer


@admin.register(SipHost)
class SipHostAdmin(admin.ModelAdmin):
    list_display = ("name", "public_address", "sip_port_min", "sip_port_max", "created_at")
    search_fields = ("name", "public_address")


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
        "actual_state",
        "registered_clients",
        "last_registration_at",
        "last_call_at",
    )
    inlines = [LocalUserInline]


@admin.register(LocalUser)
class LocalUserAdmin(admin.ModelAdmin):
    list_display = ("number", "display_name", "server", "call_level")
    search_fields = ("number", "display_name", "server__name")
    exclude = ("ha1_md5", "ha1_sha256")


@admin.register(PortAllocation)
class PortAllocationAdmin(admin.ModelAdmin):
    list_display = ("host", "port", "purpose", "server")
    list_filter = ("purpose", "host")
    search_fields = ("port", "server__name")
