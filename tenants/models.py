from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    """A person who logs in to the portal; identified by e-mail address."""

    email = models.EmailField(_("e-mail address"), unique=True)
    email_verified_at = models.DateTimeField(_("e-mail verified at"), null=True, blank=True)
    # Blank: follow the browser. Set by the language switcher and at signup; the member's
    # e-mails are written in it too.
    language = models.CharField(
        _("language"), max_length=10, choices=settings.LANGUAGES, blank=True
    )

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS = ["username"]

    def __str__(self) -> str:
        return self.email


def default_time_zone() -> str:
    """The platform's default zone (SIPCLOUD_DEFAULT_TIME_ZONE), read when a tenant is made."""
    return settings.SIPCLOUD_DEFAULT_TIME_ZONE


class Tenant(models.Model):
    """A customer account; owns virtual servers and has members."""

    name = models.CharField(_("company name"), max_length=120)
    # An IANA name (zoneinfo); every time the portal shows the tenant's members is in it.
    time_zone = models.CharField(_("time zone"), max_length=64, default=default_time_zone)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    # Activity signal for the zombie purge: the latest portal login of any member.
    last_member_login_at = models.DateTimeField(
        _("last member login at"), null=True, blank=True, db_index=True
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("tenant")
        verbose_name_plural = _("tenants")

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", _("Owner")
        ADMIN = "admin", _("Admin")
        VIEWER = "viewer", _("Viewer")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="memberships",
        verbose_name=_("user"),
    )
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="memberships", verbose_name=_("tenant")
    )
    role = models.CharField(_("role"), max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant")
        ]

    def __str__(self) -> str:
        return _("%(user)s (%(role)s) in %(tenant)s") % {
            "user": self.user,
            "role": self.get_role_display(),
            "tenant": self.tenant,
        }

    @property
    def can_change(self) -> bool:
        return self.role in {self.Role.OWNER, self.Role.ADMIN}


class LoginAddress(models.Model):
    """An address a user has logged in from: log-in throttling spares it (docs/security.md).

    Attempts for the user from such an address are counted apart from everyone else's, so a
    guessing attack from elsewhere never pauses the owner there. Addresses are kept as the
    throttle counts them (an IPv6 /64 by its first address).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="login_addresses",
        verbose_name=_("user"),
    )
    address = models.GenericIPAddressField(_("address"))
    first_login_at = models.DateTimeField(_("first log-in"), auto_now_add=True)
    last_login_at = models.DateTimeField(_("last log-in"))

    class Meta:
        verbose_name = _("log-in address")
        verbose_name_plural = _("log-in addresses")
        constraints = [
            models.UniqueConstraint(fields=["user", "address"], name="login_address_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.address}"
