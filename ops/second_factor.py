"""Operators' second factor: an authenticator app (TOTP) and single-use recovery codes.

Built on django-otp: an operator has at most one confirmed `TOTPDevice` (the authenticator)
and one `StaticDevice` holding the recovery codes. A staff session reaches /ops/ and /admin/
only once it is verified with either (`OperatorSecondFactorMiddleware`); members of tenants
are not concerned.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

import django_otp
import segno
from django.db import transaction
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from tenants.models import User

logger = logging.getLogger(__name__)

RECOVERY_CODE_COUNT = 10
AUTHENTICATOR_NAME = "authenticator"
RECOVERY_CODES_NAME = "recovery codes"
# Fresh recovery codes wait here, in the operator's session, until the page shows them once.
FRESH_CODES_SESSION_KEY = "ops_fresh_recovery_codes"


@dataclass(frozen=True)
class Verification:
    """The outcome of a code typed on the verify page."""

    device: Device | None = None
    recovery_code_used: bool = False
    # Set when too many wrong codes came in a row: no code is tried before this time.
    locked_until: datetime | None = None


def has_second_factor(user: User) -> bool:
    """Whether the operator has a confirmed device to verify with (authenticator or codes)."""
    return django_otp.user_has_device(user, confirmed=True)


def authenticator(user: User) -> TOTPDevice | None:
    return TOTPDevice.objects.devices_for_user(user, confirmed=True).first()


def recovery_codes_left(user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def normalise(code: str) -> str:
    """What the operator typed, without the spaces and dashes people add when copying."""
    return "".join(code.split()).replace("-", "").lower()


def is_authenticator_code(code: str) -> bool:
    return len(code) == 6 and code.isdigit()


def verify(user: User, code: str) -> Verification:
    """Try a code: six digits against the authenticator, anything else as a recovery code.

    A recovery code is spent when it is accepted. Wrong codes slow the next tries down
    (1, 2, 4, ... seconds between tries, per device: django-otp's throttling).
    """
    code = normalise(code)
    if is_authenticator_code(code):
        devices: list[Device] = list(TOTPDevice.objects.devices_for_user(user, confirmed=True))
    else:
        devices = list(StaticDevice.objects.devices_for_user(user, confirmed=True))
    locked_until = None
    for device in devices:
        allowed, info = device.verify_is_allowed()
        if not allowed:
            locked_until = max(locked_until or info["locked_until"], info["locked_until"])
            continue
        verified = django_otp.verify_token(user, device.persistent_id, code)
        if verified is not None:
            if isinstance(verified, StaticDevice):
                logger.warning("operator %s: signed in with a recovery code", user.email)
            return Verification(
                device=verified, recovery_code_used=isinstance(verified, StaticDevice)
            )
    return Verification(locked_until=locked_until)


def session_verify(request: HttpRequest, device: Device) -> None:
    """Mark the session verified by `device`, under a new session key (the rights grew)."""
    request.session.cycle_key()
    django_otp.login(request, device)


def enrolment_device(user: User) -> TOTPDevice:
    """The authenticator being set up: the same secret until it is confirmed with a code."""
    device = TOTPDevice.objects.devices_for_user(user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=AUTHENTICATOR_NAME, confirmed=False)
    return device


def secret_text(device: TOTPDevice) -> str:
    """The key as authenticator apps take it typed in: base32, in groups of four."""
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def qr_code_svg(device: TOTPDevice) -> str:
    """The otpauth:// address as a QR code, an inline SVG element (no script, no style)."""
    return segno.make(device.config_url, error="m").svg_inline(
        scale=4, dark="#1d2430", light="#ffffff"
    )


def confirm_enrolment(user: User, device: TOTPDevice, code: str) -> list[str] | None:
    """Confirm the new authenticator with its first code.

    It replaces any earlier authenticator, and comes with a new set of recovery codes
    (returned, to be shown once). None: the code is wrong (or tried too fast).
    """
    code = normalise(code)
    if not is_authenticator_code(code):
        device.throttle_increment()
        return None
    if django_otp.verify_token(user, device.persistent_id, code) is None:
        return None
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        TOTPDevice.objects.filter(pk=device.pk).update(confirmed=True)
        device.confirmed = True
        codes = new_recovery_codes(user)
    logger.info("operator %s: authenticator set up", user.email)
    return codes


def new_recovery_codes(user: User) -> list[str]:
    """Replace the operator's recovery codes with RECOVERY_CODE_COUNT new ones.

    The device that holds them stays, so a session verified with a recovery code stays
    verified.
    """
    with transaction.atomic():
        device = StaticDevice.objects.filter(user=user).order_by("pk").first()
        if device is None:
            device = StaticDevice.objects.create(
                user=user, name=RECOVERY_CODES_NAME, confirmed=True
            )
        StaticDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        StaticDevice.objects.filter(pk=device.pk).update(confirmed=True)
        StaticToken.objects.filter(device=device).delete()
        codes = [StaticToken.random_token() for _ in range(RECOVERY_CODE_COUNT)]
        StaticToken.objects.bulk_create(StaticToken(device=device, token=c) for c in codes)
    logger.info("operator %s: %d new recovery codes", user.email, len(codes))
    return codes


def reset(user: User) -> int:
    """Remove every second-factor device of the user (the operator lost them all).

    Sessions verified with them are no longer verified; the next visit to /ops/ or
    /admin/ starts a new enrolment. Returns the number of devices removed.
    """
    removed = 0
    with transaction.atomic():
        for model in django_otp.device_classes():
            removed += model.objects.filter(user=user).delete()[1].get(model._meta.label, 0)
    logger.warning("operator %s: second factor reset, %d devices removed", user.email, removed)
    return removed


def locked_for_seconds(locked_until: datetime) -> int:
    return max(1, int((locked_until - timezone.now()).total_seconds() + 0.999))


def safe_next(request: HttpRequest) -> str | None:
    """The page the operator was going to, when it is one of ours."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return None


def with_next(url: str, target: str | None) -> str:
    return f"{url}?{urlencode({'next': target})}" if target else url


def redirect_to_second_factor(request: HttpRequest) -> HttpResponseRedirect:
    """To the verify page, or to enrolment for an operator who has no second factor yet."""
    name = (
        "ops:second-factor-verify" if has_second_factor(request.user) else "ops:second-factor-enrol"
    )
    return HttpResponseRedirect(with_next(reverse(name), request.get_full_path()))
