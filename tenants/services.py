"""Customer sign-up, e-mail verification and login bookkeeping."""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from config.timezones import is_time_zone
from sipnodes import services as sipnode_services
from sipnodes.models import VirtualServer
from sipnodes.services import IssuedPassword
from tenants.models import Membership, Tenant, User

VERIFY_SALT = "tenants.verify-email"
VERIFY_MAX_AGE = 7 * 24 * 3600


class InvalidVerificationLink(Exception):
    """The link is forged, expired or was made for another address."""


class UnknownTimeZone(ValueError):
    """Not a time zone name zoneinfo knows."""


@dataclass(frozen=True)
class Signup:
    user: User
    tenant: Tenant
    server: VirtualServer
    passwords: list[IssuedPassword]


@transaction.atomic
def tenant_signup(
    *, email: str, password: str, company_name: str, language: str, time_zone: str
) -> Signup:
    """A new customer: owner account, tenant, and a free 5-client server with users 100-102.

    The owner keeps the language they signed up in (their e-mails are written in it) and
    the tenant gets the time zone of their browser.
    """
    if not is_time_zone(time_zone):
        raise UnknownTimeZone(time_zone)
    user = User.objects.create_user(
        username=email, email=email, password=password, language=language
    )
    tenant = Tenant.objects.create(name=company_name, time_zone=time_zone)
    Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.OWNER)
    with translation.override(language):
        name = _("%(company)s SIP server") % {"company": company_name}
    server = sipnode_services.server_create(
        tenant=tenant,
        name=name[: VirtualServer._meta.get_field("name").max_length],
        hold_for_verification=settings.SIPCLOUD_REQUIRE_EMAIL_VERIFICATION,
    )
    passwords = sipnode_services.server_create_starter_users(server=server)
    return Signup(user=user, tenant=tenant, server=server, passwords=passwords)


def verification_token(user: User) -> str:
    return signing.dumps({"user": user.pk, "email": user.email}, salt=VERIFY_SALT)


def send_verification_email(*, user: User, base_url: str) -> None:
    link = base_url + reverse("tenants:verify-email", args=[verification_token(user)])
    with translation.override(user.language or translation.get_language()):
        subject = _("Verify your sipcloud e-mail address")
        message = _(
            "Welcome to sipcloud.\n\nConfirm your e-mail address with this link "
            "(valid for 7 days):\n\n%(link)s\n"
        ) % {"link": link}
    send_mail(subject=subject, message=message, from_email=None, recipient_list=[user.email])


@transaction.atomic
def user_verify_email(*, token: str) -> User:
    """Marks the address verified and starts the servers held back until now."""
    try:
        payload = signing.loads(token, salt=VERIFY_SALT, max_age=VERIFY_MAX_AGE)
        user = User.objects.select_for_update().get(pk=payload["user"], email=payload["email"])
    except (signing.BadSignature, User.DoesNotExist, KeyError, TypeError) as exc:
        raise InvalidVerificationLink(
            _("This verification link is invalid or has expired.")
        ) from exc
    if user.email_verified_at is None:
        user.email_verified_at = timezone.now()
        user.save(update_fields=["email_verified_at"])
        held = VirtualServer.objects.select_related("host").filter(
            tenant__memberships__user=user, awaiting_verification=True
        )
        for server in held:
            server.awaiting_verification = False
            server.save(update_fields=["awaiting_verification", "updated_at"])
            sipnode_services.server_set_desired_state(
                server=server, state=VirtualServer.State.RUNNING
            )
    return user


def user_set_language(*, user: User, language: str) -> None:
    """The member's choice from the language switcher, kept for every browser and e-mail."""
    if language not in dict(settings.LANGUAGES):
        raise ValueError(f"not a portal language: {language!r}")
    User.objects.filter(pk=user.pk).update(language=language)
    user.language = language


def tenant_set_time_zone(*, tenant: Tenant, time_zone: str) -> None:
    if not is_time_zone(time_zone):
        raise UnknownTimeZone(time_zone)
    Tenant.objects.filter(pk=tenant.pk).update(time_zone=time_zone)
    tenant.time_zone = time_zone


def user_record_login(*, user: User, at: datetime) -> None:
    """Portal logins count as tenant activity for the zombie purge."""
    Tenant.objects.filter(memberships__user=user).update(last_member_login_at=at)
