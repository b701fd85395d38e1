from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.utils.translation import gettext_lazy as _

from tenants.models import Membership, Tenant, User


@admin.register(User)
class SipcloudUserAdmin(UserAdmin):
    list_display = (
        "email",
        "is_staff",
        "language",
        "email_verified_at",
        "last_login",
        "date_joined",
    )
    search_fields = ("email",)
    ordering = ("email",)
    fieldsets = (
        *UserAdmin.fieldsets,
        (_("Verification and language"), {"fields": ("email_verified_at", "language")}),
    )


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "time_zone", "created_at", "last_member_login_at")
    search_fields = ("name", "memberships__user__email")
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("user__email", "tenant__name")
    autocomplete_fields = ["user", "tenant"]
