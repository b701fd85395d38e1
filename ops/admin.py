"""django-otp's own admin pages are left out of the admin.

They would show every operator's authenticator key and recovery codes to any superuser, in
English only. An operator manages their own second factor on /ops/second-factor/; one who
lost it is reset with `manage.py reset_second_factor` (docs/operations.md).
"""

import django_otp.plugins.otp_static.admin
import django_otp.plugins.otp_totp.admin  # noqa: F401 (registered first, so removed for good)
from django.contrib import admin
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

for model in (StaticDevice, TOTPDevice):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
