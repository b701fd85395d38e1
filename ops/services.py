"""Operator tasks on the platform itself."""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from sipnodes.credentials import random_sip_password
from sipnodes.models import SipHost

OPERATOR_EMAIL = "operator@localhost"


@dataclass(frozen=True)
class Bootstrap:
    host: SipHost
    host_created: bool
    operator_email: str
    operator_password: str | None  # set only when the account was created just now


@transaction.atomic
def platform_bootstrap() -> Bootstrap:
    """Makes a fresh installation usable: one SIP host and one operator account."""
    host, host_created = SipHost.objects.get_or_create(
        name=settings.SIPCLOUD_DEFAULT_HOST_NAME,
        defaults={
            "public_address": settings.SIPCLOUD_DEFAULT_HOST_ADDRESS,
            "listen_address": settings.SIPCLOUD_DEFAULT_HOST_ADDRESS,
        },
    )
    User = get_user_model()
    operator = User.objects.filter(is_staff=True).order_by("pk").first()
    password = None
    if operator is None:
        password = random_sip_password(16)
        operator = User.objects.create_superuser(
            username=OPERATOR_EMAIL, email=OPERATOR_EMAIL, password=password
        )
    return Bootstrap(
        host=host,
        host_created=host_created,
        operator_email=operator.email,
        operator_password=password,
    )
