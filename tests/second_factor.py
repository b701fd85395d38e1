"""Operators' second factor in tests: a session verified as after the verify page, and codes."""

from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from tenants.models import User


def authenticator_of(user: User) -> TOTPDevice:
    """The operator's confirmed authenticator, set up now if they have none."""
    device = TOTPDevice.objects.devices_for_user(user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
    return device


def current_code(device: TOTPDevice) -> str:
    """The code the operator's authenticator app shows now."""
    code = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits)
    return f"{code:0{device.digits}d}"


def verified_login(client: Client, user: User) -> TOTPDevice:
    """Log the operator in with a session verified by their authenticator.

    The state the verify page leaves (django_otp.login: the device's id in the session),
    without spending a code; tests of the verify page itself type one.
    """
    client.force_login(user)
    device = authenticator_of(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return device
